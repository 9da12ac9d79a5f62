#include "parchgrad/dataset_stats.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>

#include "core/error.h"
#include "weights/state_dict.h"

namespace pg {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const char kMagic[16] = {'P', 'G', 'S', 'T', 'A', 'T', 'S', 'S', 'H', 'A', 'R', 'D', 1, 0, 0, 0};

struct MomentRecord {
  int64_t n;
  double sum_hi, sum_lo, sumsq_hi, sumsq_lo;
};
static_assert(sizeof(MomentRecord) == 40, "packed moment record");

void write_or_throw(std::ofstream& f, const void* p, size_t bytes, const std::string& path) {
  f.write(static_cast<const char*>(p), std::streamsize(bytes));
  if (!f) throw file_error(path, "write failed");
}

void read_or_throw(std::ifstream& f, void* p, size_t bytes, const std::string& path) {
  f.read(static_cast<char*>(p), std::streamsize(bytes));
  if (!f || size_t(f.gcount()) != bytes) throw file_error(path, "truncated shard file");
}

}  // namespace

DatasetStats::DatasetStats(DatasetStatsMeta meta, std::vector<std::pair<std::string, int>> convs,
                           size_t memory_limit, std::string spill_path)
    : meta_(std::move(meta)), memory_limit_(memory_limit), spill_path_(std::move(spill_path)) {
  if (meta_.num_classes < 1) throw Error("statistics need at least one class");
  per_class_.assign(size_t(meta_.num_classes), 0);
  for (auto& [name, c] : convs) {
    Conv conv;
    conv.name = name;
    conv.channels = c;
    conv.moments.resize(size_t(meta_.num_classes) * size_t(c));
    convs_.push_back(std::move(conv));
  }
}

DatasetStats::~DatasetStats() {
  if (spilled_) {
    std::error_code ec;
    fs::remove(spill_path_, ec);
  }
}

void DatasetStats::begin_batch(const std::vector<int64_t>& image_index, const std::vector<int>& labels) {
  if (image_index.size() != labels.size()) throw Error("begin_batch: index and label counts differ");
  for (int l : labels)
    if (l < 0 || l >= meta_.num_classes) throw Error("class id " + std::to_string(l) + " out of range");
  batch_labels_ = labels;
  for (size_t i = 0; i < labels.size(); ++i) {
    index_.push_back(image_index[i]);
    ++per_class_[size_t(labels[i])];
  }
  for (auto& c : convs_) c.seen = false;
}

void DatasetStats::add(const std::string& name, const Tensor& gap) {
  auto it = std::find_if(convs_.begin(), convs_.end(), [&](const Conv& c) { return c.name == name; });
  if (it == convs_.end()) throw Error("statistics: unknown conv " + name);
  Conv& conv = *it;
  const int64_t N = int64_t(batch_labels_.size());
  if (gap.ndim() != 2 || gap.dim(0) != N || gap.dim(1) != conv.channels)
    throw Error(name + ": gap of shape " + gap.shape_str() + ", expected [" + std::to_string(N) + ", " +
                std::to_string(conv.channels) + "]");
  if (conv.seen) throw Error(name + ": gap given twice in one batch");
  conv.seen = true;
  const int C = conv.channels;
  const float* g = gap.data();
  for (int64_t n = 0; n < N; ++n) {
    stats::ClassMoments* m = conv.moments.data() + size_t(batch_labels_[size_t(n)]) * size_t(C);
    for (int c = 0; c < C; ++c) m[c].add(double(g[n * C + c]));
  }
  conv.buffer.insert(conv.buffer.end(), g, g + N * C);
  buffered_ += size_t(N * C) * sizeof(float);
}

void DatasetStats::end_batch() {
  for (const auto& c : convs_)
    if (!c.seen) throw Error(c.name + ": no gap values in this batch (conv not hooked?)");
  if (buffered_ > memory_limit_) spill();
}

void DatasetStats::spill() {
  std::ofstream f(spill_path_, std::ios::binary | (spilled_ ? std::ios::app : std::ios::trunc));
  if (!f) throw file_error(spill_path_, "cannot write temporary sample file");
  spilled_ = true;
  f.seekp(0, std::ios::end);
  uint64_t offset = uint64_t(f.tellp());
  for (auto& c : convs_) {
    if (c.buffer.empty()) continue;
    Segment s;
    s.file = spill_path_;
    s.offset = offset;
    s.rows = int64_t(c.buffer.size() / size_t(c.channels));
    write_or_throw(f, c.buffer.data(), c.buffer.size() * sizeof(float), spill_path_);
    offset += c.buffer.size() * sizeof(float);
    c.segments.push_back(std::move(s));
    std::vector<float>().swap(c.buffer);
  }
  f.flush();
  if (!f) throw file_error(spill_path_, "write failed (disk full?)");
  buffered_ = 0;
}

void DatasetStats::seal_buffers() {
  for (auto& c : convs_) {
    if (c.buffer.empty()) continue;
    Segment s;
    s.rows = int64_t(c.buffer.size() / size_t(c.channels));
    s.mem = std::move(c.buffer);
    c.buffer.clear();
    c.segments.push_back(std::move(s));
  }
  buffered_ = 0;
}

void DatasetStats::read_columns(const Conv& conv, int c0, int c1, std::vector<float>& cols) const {
  const int64_t n = int64_t(index_.size());
  const int C = conv.channels, W = c1 - c0;
  cols.assign(size_t(n) * size_t(W), 0.0f);
  int64_t row = 0;
  std::vector<float> block;
  const int64_t block_rows = std::max<int64_t>(1, int64_t((4u << 20) / (size_t(C) * sizeof(float))));
  for (const Segment& s : conv.segments) {
    std::ifstream f;
    if (!s.file.empty()) {
      f.open(s.file, std::ios::binary);
      if (!f) throw file_error(s.file, "cannot read samples");
      f.seekg(std::streamoff(s.offset));
    }
    for (int64_t r0 = 0; r0 < s.rows; r0 += block_rows) {
      const int64_t rn = std::min(block_rows, s.rows - r0);
      const float* src;
      if (s.file.empty()) {
        src = s.mem.data() + size_t(r0) * size_t(C);
      } else {
        block.resize(size_t(rn) * size_t(C));
        read_or_throw(f, block.data(), block.size() * sizeof(float), s.file);
        src = block.data();
      }
      for (int64_t r = 0; r < rn; ++r)
        for (int c = c0; c < c1; ++c) cols[size_t(c - c0) * size_t(n) + size_t(row + r)] = src[r * C + c];
    }
    row += s.rows;
  }
  if (row != n) throw Error(conv.name + ": " + std::to_string(row) + " samples stored for " + std::to_string(n) + " images");
}

void DatasetStats::write_shard(const std::string& path, int shard, int shards) {
  seal_buffers();
  json convs = json::array();
  for (const auto& c : convs_) convs.push_back({c.name, c.channels});
  const json header = {{"model", meta_.model},       {"test", meta_.test},
                       {"weights", meta_.weights},   {"num_classes", meta_.num_classes},
                       {"shard", shard},             {"shards", shards},
                       {"images", index_.size()},    {"images_per_class", per_class_},
                       {"convs", convs},             {"version", PARCHGRAD_VERSION}};
  json full = header;
  if (!meta_.preprocess.empty()) full["preprocess"] = meta_.preprocess;
  if (!meta_.weights_hash.empty()) full["weights_hash"] = meta_.weights_hash;
  const std::string text = full.dump();
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw file_error(path, "cannot write");
    const uint64_t len = text.size();
    write_or_throw(f, kMagic, sizeof(kMagic), path);
    write_or_throw(f, &len, sizeof(len), path);
    write_or_throw(f, text.data(), text.size(), path);
    write_or_throw(f, index_.data(), index_.size() * sizeof(int64_t), path);
    std::vector<MomentRecord> recs;
    for (const auto& c : convs_) {
      recs.clear();
      for (const auto& m : c.moments) recs.push_back({m.n, m.sum.hi, m.sum.lo, m.sumsq.hi, m.sumsq.lo});
      write_or_throw(f, recs.data(), recs.size() * sizeof(MomentRecord), path);
    }
    std::vector<float> block;
    for (const auto& c : convs_) {
      for (const Segment& s : c.segments) {
        if (s.file.empty()) {
          write_or_throw(f, s.mem.data(), s.mem.size() * sizeof(float), path);
          continue;
        }
        std::ifstream in(s.file, std::ios::binary);
        if (!in) throw file_error(s.file, "cannot read samples");
        in.seekg(std::streamoff(s.offset));
        uint64_t left = uint64_t(s.rows) * uint64_t(c.channels);
        while (left > 0) {
          const uint64_t k = std::min<uint64_t>(left, 1u << 20);
          block.resize(size_t(k));
          read_or_throw(in, block.data(), size_t(k) * sizeof(float), s.file);
          write_or_throw(f, block.data(), size_t(k) * sizeof(float), path);
          left -= k;
        }
      }
    }
    f.close();
    if (!f) throw file_error(path, "write failed");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw file_error(path, "cannot write (rename failed)");
  }
}

std::unique_ptr<DatasetStats> DatasetStats::merge_shards(const std::vector<std::string>& paths,
                                                         size_t memory_limit) {
  if (paths.empty()) throw Error("merge: no shard files given");
  std::unique_ptr<DatasetStats> out;
  json first;
  std::set<int> ids;
  int shards = 0;
  for (const auto& path : paths) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw file_error(path, "cannot open");
    char magic[16];
    f.read(magic, 16);
    if (f.gcount() != 16 || std::memcmp(magic, kMagic, 16) != 0)
      throw file_error(path, "not a parchgrad stats shard (written by `parchgrad stats --shard`)");
    uint64_t len = 0;
    read_or_throw(f, &len, sizeof(len), path);
    if (len > (64u << 20)) throw file_error(path, "corrupt shard header");
    std::string text(size_t(len), '\0');
    read_or_throw(f, text.data(), text.size(), path);
    json h;
    try {
      h = json::parse(text);
    } catch (const std::exception&) {
      throw file_error(path, "corrupt shard header");
    }
    DatasetStatsMeta meta;
    std::vector<std::pair<std::string, int>> convs;
    int64_t images = 0;
    int shard = 0;
    std::vector<long> per_class;
    try {
      meta.model = h.at("model").get<std::string>();
      meta.test = h.at("test").get<std::string>();
      meta.weights = h.at("weights").get<std::string>();
      meta.num_classes = h.at("num_classes").get<int>();
      meta.preprocess = h.value("preprocess", std::string());
      shard = h.at("shard").get<int>();
      images = h.at("images").get<int64_t>();
      per_class = h.at("images_per_class").get<std::vector<long>>();
      for (const auto& c : h.at("convs")) convs.emplace_back(c.at(0).get<std::string>(), c.at(1).get<int>());
      if (!out) shards = h.at("shards").get<int>();
      else if (h.at("shards").get<int>() != shards)
        throw file_error(path, "is shard " + std::to_string(shard) + "/" + std::to_string(h.at("shards").get<int>()) +
                                   ", the first shard is of " + std::to_string(shards));
    } catch (const json::exception&) {
      throw file_error(path, "corrupt shard header");
    }
    if (int(per_class.size()) != meta.num_classes || images < 0) throw file_error(path, "corrupt shard header");
    if (!out) {
      first = h;
      out = std::make_unique<DatasetStats>(meta, convs, memory_limit, std::string());
    } else {
      for (const char* key : {"model", "test", "weights", "num_classes", "convs", "weights_hash", "preprocess"})
        if (h.value(key, json()) != first.value(key, json()))
          throw file_error(path, std::string("differs from ") + paths[0] + " in " + key + " (" +
                                     h.value(key, json()).dump() + " vs " + first.value(key, json()).dump() + ")");
    }
    if (!ids.insert(shard).second) throw file_error(path, "shard " + std::to_string(shard) + " given twice");
    std::vector<int64_t> idx(static_cast<size_t>(images));
    read_or_throw(f, idx.data(), idx.size() * sizeof(int64_t), path);
    out->index_.insert(out->index_.end(), idx.begin(), idx.end());
    for (int k = 0; k < meta.num_classes; ++k) out->per_class_[size_t(k)] += per_class[size_t(k)];
    std::vector<MomentRecord> recs;
    for (auto& c : out->convs_) {
      recs.resize(c.moments.size());
      read_or_throw(f, recs.data(), recs.size() * sizeof(MomentRecord), path);
      for (size_t i = 0; i < recs.size(); ++i) {
        stats::ClassMoments m;
        m.n = recs[i].n;
        m.sum = {recs[i].sum_hi, recs[i].sum_lo};
        m.sumsq = {recs[i].sumsq_hi, recs[i].sumsq_lo};
        c.moments[i].merge(m);
      }
    }
    uint64_t offset = uint64_t(f.tellg());
    for (auto& c : out->convs_) {
      Segment s;
      s.file = path;
      s.offset = offset;
      s.rows = images;
      offset += uint64_t(images) * uint64_t(c.channels) * sizeof(float);
      if (images > 0) c.segments.push_back(std::move(s));
    }
    f.seekg(0, std::ios::end);
    if (uint64_t(f.tellg()) != offset) throw file_error(path, "truncated or oversized shard file");
  }
  for (int i = 0; i < shards; ++i)
    if (!ids.count(i))
      throw Error("merge: shard " + std::to_string(i) + "/" + std::to_string(shards) + " is missing");
  std::vector<int64_t> sorted = out->index_;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 1; i < sorted.size(); ++i)
    if (sorted[i] == sorted[i - 1])
      throw Error("merge: image " + std::to_string(sorted[i]) + " is in more than one shard (overlapping shards)");
  return out;
}

void DatasetStats::finalize(const std::string& out_path) {
  seal_buffers();
  const int64_t n = int64_t(index_.size());
  const int K = meta_.num_classes;
  if (n < 3) throw Error("statistics need at least 3 images (got " + std::to_string(n) + ")");
  const bool welch = meta_.test == "welch";
  if (!welch && meta_.test != "student") throw Error("unknown test '" + meta_.test + "' (student or welch)");
  // Sample order for the Shapiro-Wilk test: by image index, whatever the shard layout.
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return index_[size_t(a)] < index_[size_t(b)]; });

  weights::StateDict out;
  std::vector<float> cols;
  std::vector<double> x(static_cast<size_t>(n));
  for (const Conv& conv : convs_) {
    const int C = conv.channels;
    Tensor mean({C}), sd({C}), sp({C}), cp({C, K});
    std::vector<stats::ClassMoments> cls(static_cast<size_t>(K));
    for (int c = 0; c < C; ++c) {
      stats::ClassMoments total;
      for (int k = 0; k < K; ++k) {
        cls[size_t(k)] = conv.moments[size_t(k) * size_t(C) + size_t(c)];
        total.merge(cls[size_t(k)]);
      }
      mean[c] = float(total.mean());
      sd[c] = float(std::sqrt(total.variance_unbiased()));
      const std::vector<double> p = stats::class_vs_rest_p(cls, total, welch);
      for (int k = 0; k < K; ++k) cp[int64_t(c) * K + k] = float(stats::nan_to_one(p[size_t(k)]));
    }
    // Shapiro-Wilk, a block of channels at a time within the memory limit.
    const int64_t per_channel = std::max<int64_t>(1, int64_t(memory_limit_ / (size_t(n) * sizeof(float))));
    const int step = int(std::min<int64_t>(C, per_channel));
    for (int c0 = 0; c0 < C; c0 += step) {
      const int c1 = std::min(C, c0 + step);
      read_columns(conv, c0, c1, cols);
      for (int c = c0; c < c1; ++c) {
        const float* col = cols.data() + size_t(c - c0) * size_t(n);
        for (int64_t i = 0; i < n; ++i) x[size_t(i)] = double(col[order[size_t(i)]]);
        sp[c] = float(stats::nan_to_one(stats::shapiro_wilk(x).p));
      }
    }
    out[conv.name + ".mean"] = mean;
    out[conv.name + ".std"] = sd;
    out[conv.name + ".shapiro_p"] = sp;
    out[conv.name + ".cls_p"] = cp;
  }
  std::map<std::string, std::string> meta = {
      {"model", meta_.model},
      {"test", meta_.test},
      {"num_classes", std::to_string(K)},
      {"images_per_class", json(per_class_).dump()},
      {"version", PARCHGRAD_VERSION},
      {"weights", meta_.weights}};
  if (!meta_.preprocess.empty()) meta["preprocess"] = meta_.preprocess;
  weights::save_safetensors(out_path, out, meta);
}

}  // namespace pg
