// Dataset statistics for ParchGrad (method doc, section 3): per conv and channel, streamed
// over a labelled image set, the per-class moments of gap = mean_hw relu(raw conv output)
// and the whole sample of gap values (for the Shapiro-Wilk test). Accumulators can be
// written to a shard file, read back and merged; finalize() writes the stats file that
// load_stats() reads.
//
// Memory: gap samples are kept in memory up to a limit and then appended to a temporary
// spill file (removed by the destructor). finalize() reads them back a block of channels
// at a time, so it stays within the same limit (at least one channel's column).
//
// Exactness: the Shapiro-Wilk sample of a channel is sorted by image index before the
// test, and the moments are double-double sums (stats::ClassMoments), so merging shards
// gives the same file as one run over all images (bitwise, see ClassMoments).
//
// Shard file format (host byte order, little-endian on every supported platform):
//   bytes 0..15   magic "PGSTATSSHARD\x01\0\0\0"
//   uint64        length L of the JSON header, then L bytes of JSON:
//                 {"model", "test", "weights", "num_classes", "shard", "shards", "images",
//                  "images_per_class": [..], "convs": [[name, channels], ..], "version",
//                  "weights_hash" (when known)}
//   int64[images] the image index of every sample, in row order
//   per conv, in header order: classes x channels records (class-major) of
//                 int64 n, double sum.hi, sum.lo, sumsq.hi, sumsq.lo
//   per conv, in header order: float32 gap[images][channels]
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "parchgrad/stats_math.h"

namespace pg {

struct DatasetStatsMeta {
  std::string model;    // architecture name (metadata "model")
  std::string test;     // "student" or "welch"
  std::string weights;  // weights file basename
  // The images' preprocessing as JSON (name, resize, crop, interpolation, mean, std: metadata
  // "preprocess", also in shard headers, where merge_shards requires it to agree); "": none.
  std::string preprocess;
  int num_classes = 0;
  // The weights' content hash (`parchgrad stats --shard` sets it): written into shard files
  // only, where merge_shards requires it to agree; the statistics file does not hold it.
  std::string weights_hash;
};

class DatasetStats {
 public:
  // convs: (name, channels) in model order. memory_limit: bytes of gap samples kept in
  // memory before spilling to spill_path (created on first use, removed on destruction).
  DatasetStats(DatasetStatsMeta meta, std::vector<std::pair<std::string, int>> convs,
               size_t memory_limit, std::string spill_path);
  ~DatasetStats();
  DatasetStats(const DatasetStats&) = delete;
  DatasetStats& operator=(const DatasetStats&) = delete;

  const DatasetStatsMeta& meta() const { return meta_; }
  int64_t images() const { return int64_t(index_.size()); }
  // The image index of every sample, in the order they were added (or merged).
  const std::vector<int64_t>& image_indices() const { return index_; }
  const std::vector<long>& images_per_class() const { return per_class_; }

  // Starts a batch of samples: their image indices and class ids. Then add() is called
  // once per conv with gap [N, channels] for the batch (any conv order).
  void begin_batch(const std::vector<int64_t>& image_index, const std::vector<int>& labels);
  void add(const std::string& conv, const Tensor& gap);
  // Ends the batch (checks every conv was given, spills when over the memory limit).
  void end_batch();

  // Raw accumulators and samples to a shard file (atomically: temporary file + rename).
  void write_shard(const std::string& path, int shard, int shards);
  // Merges the given shard files (same model, test, weights, classes and convs; shard
  // ids 0..N-1 of one N, each once; disjoint image indices). Checkpoint parts of one run
  // (`parchgrad stats` writes them as it goes, shards = 0) merge the same way, any ids. The samples stay in the
  // shard files until finalize(), which must be called while they exist.
  static std::unique_ptr<DatasetStats> merge_shards(const std::vector<std::string>& paths,
                                                    size_t memory_limit);

  // Computes mean, std (unbiased), shapiro_p, cls_p for every conv and writes the stats
  // safetensors file with its metadata.
  void finalize(const std::string& out_path);

 private:
  struct Segment {
    std::string file;  // empty: rows are in `mem`
    uint64_t offset = 0;
    int64_t rows = 0;
    std::vector<float> mem;
  };
  struct Conv {
    std::string name;
    int channels = 0;
    std::vector<stats::ClassMoments> moments;  // [classes][channels]
    std::vector<Segment> segments;             // sample rows, in the order of index_
    std::vector<float> buffer;                 // rows of the current, unspilled part
    bool seen = false;
  };
  void spill();
  void seal_buffers();  // moves unspilled buffers into memory segments
  // Reads rows [.., ..) channels [c0, c1) of a conv's samples into cols (channel-major).
  void read_columns(const Conv& conv, int c0, int c1, std::vector<float>& cols) const;

  DatasetStatsMeta meta_;
  std::vector<Conv> convs_;
  std::vector<int64_t> index_;
  std::vector<long> per_class_;
  std::vector<int> batch_labels_;
  size_t memory_limit_ = 0, buffered_ = 0;
  std::string spill_path_;
  bool spilled_ = false;
};

}  // namespace pg
