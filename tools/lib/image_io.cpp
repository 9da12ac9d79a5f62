// Image decoding (PNG via stb_image, JPEG via libjpeg-turbo's libjpeg API, decoded as PIL
// decodes it; our own structural checks for truncated and corrupt files), PIL-exact
// antialiased bilinear resizing, torchvision-exact centre cropping and ImageNet
// normalisation, and PNG writing.
//
// JPEG, as Pillow 9.4's JpegImagePlugin and JpegDecode.c decode a file that
// Image.open(p).convert("RGB") reads (so, as torchvision's loader does): the same library
// (Debian's libjpeg62-turbo: PIL's _imaging links libjpeg.so.62) with libjpeg's default
// decompression parameters, which PIL leaves alone unless draft() is called (slow-integer
// IDCT JDCT_ISLOW, fancy upsampling, block smoothing, no scaling), the colour space of the
// file as libjpeg reads it from the JFIF/Adobe markers, and the output PIL asks for by the
// number of components in the frame: 1 -> JCS_GRAYSCALE, replicated into R, G and B as
// convert("RGB") does; 3 -> JCS_RGB (libjpeg's YCbCr -> RGB); 4 -> JCS_CMYK, which PIL reads
// as Adobe-inverted CMYK ("CMYK;I") and converts with its own formula (cmyk_channel_to_rgb below).
// Other component counts PIL refuses, and so do we.
//
// The resize reproduces Pillow 9.4's ImagingResample for 8-bit images: per-dimension
// triangle-filter windows whose support grows with the downscale factor, coefficients
// normalised in double precision and rounded to 22-bit fixed point, a horizontal pass
// (over the band of rows the vertical pass will read) and then a vertical pass, each
// rounding and clipping to uint8. A dimension whose size does not change is not filtered.

// The coefficient arithmetic must round exactly as Pillow's (compiled without fused
// multiply-add), so keep the compiler from contracting a*b+c into an FMA in this file.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "tools/lib/image_io.h"

#include <stb_image.h>
#include <stb_image_write.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <csetjmp>
#include <cstdio>  // before jpeglib.h, which uses FILE
#include <cstring>
#include <limits>
#include <memory>

#include <jpeglib.h>

#include <jerror.h>

#include "core/error.h"
#include "core/file.h"

// ---------------------------------------------------------------- libjpeg error handling
//
// libjpeg reports errors through a callback that must not return. Ours longjmps back to the
// setjmp in decode_jpeg(), which is the only frame between the jump and its target that is
// C++: every object that frame owns lives in a heap JpegDecoder made before setjmp, so the
// jump skips no destructor, and the C++ exception is thrown only after the jump, from C++
// code. (Throwing through libjpeg's C frames instead would unwind code compiled without
// exception tables.)

namespace {

struct JpegErrorManager {
  jpeg_error_mgr pub;  // first: libjpeg's cinfo->err points here
  std::jmp_buf jump;
  int code = 0;        // the libjpeg message code that stopped the decoding
  bool too_many_scans = false;
  char message[JMSG_LENGTH_MAX] = {};
};

// A progressive file of more scans than this is refused: encoders write a few dozen at most,
// and thousands of tiny scans only make decoding slow (libjpeg-turbo's djpeg offers the same
// limit, -maxscans). PIL has none; no real file reaches it.
constexpr int kMaxJpegScans = 1000;

// Warnings that mean the decoder had to make up pixels (libjpeg substitutes zeros and goes
// on). PIL ignores libjpeg's warnings; we refuse such a file as corrupt (or truncated), so
// that every JPEG we accept decodes to what PIL gives. Warnings about metadata (an unknown
// JFIF version or Adobe transform code, bytes skipped before a marker) do not change a pixel,
// and are ignored as PIL ignores them.
bool jpeg_warning_is_fatal(int code) {
  switch (code) {
    case JWRN_JPEG_EOF:            // premature end of file
    case JWRN_HIT_MARKER:          // premature end of a scan's data
    case JWRN_HUFF_BAD_CODE:       // bad Huffman code
    case JWRN_ARITH_BAD_CODE:      // bad arithmetic code
    case JWRN_MUST_RESYNC:         // restart marker out of sequence
    case JWRN_BOGUS_PROGRESSION:   // progressive refinement of data never sent
      return true;
    default:
      return false;
  }
}

}  // namespace

extern "C" {

static void pg_jpeg_fail(j_common_ptr cinfo) {
  auto* e = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  e->code = cinfo->err->msg_code;
  (*cinfo->err->format_message)(cinfo, e->message);
  std::longjmp(e->jump, 1);
}

static void pg_jpeg_emit_message(j_common_ptr cinfo, int msg_level) {
  if (msg_level >= 0) return;  // trace messages
  cinfo->err->num_warnings++;
  if (jpeg_warning_is_fatal(cinfo->err->msg_code)) pg_jpeg_fail(cinfo);
}

static void pg_jpeg_output_message(j_common_ptr) {}  // libjpeg never prints to stderr

static void pg_jpeg_progress(j_common_ptr cinfo) {
  if (!cinfo->is_decompressor) return;
  if (reinterpret_cast<j_decompress_ptr>(cinfo)->input_scan_number <= kMaxJpegScans) return;
  auto* e = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  e->too_many_scans = true;
  std::longjmp(e->jump, 1);
}

}  // extern "C"

namespace pg::io {

namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;
constexpr int64_t kMaxPixels = limits::kImagePixels;

std::string errno_text() { return std::strerror(errno); }

// Whole file into memory, under core/file.h's rules: a regular file of at most
// limits::kImageFileBytes. Errors: cannot open / read, not a regular file, too large, empty.
std::vector<uint8_t> read_file_bytes(const std::string& path) {
  std::vector<uint8_t> bytes = read_file_limited(path, limits::kImageFileBytes, "an image");
  if (bytes.empty()) throw file_error(path, "empty file");
  return bytes;
}

// Refuses a declared size beyond the pixel limit before anything is decoded.
void check_declared_size(const std::string& path, const char* kind, uint64_t w, uint64_t h) {
  if (w == 0 || h == 0) throw file_error(path, std::string("corrupt ") + kind + " (empty image)");
  if (w * h > static_cast<uint64_t>(kMaxPixels))
    throw file_error(path, "image too large (" + std::to_string(w) + "x" + std::to_string(h) + ", at most " +
                               std::to_string(kMaxPixels) + " pixels)");
}

uint32_t be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
}

uint32_t crc32_update(uint32_t crc, const uint8_t* p, size_t n) {
  static const auto table = [] {
    std::vector<uint32_t> t(256);
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return crc;
}

const uint8_t kPngSig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};

struct PngInfo {
  int bit_depth = 0, color_type = 0;
};

// Walks the PNG chunk list: IHDR first, every chunk complete with a matching CRC, IEND
// present. Throws "truncated" / "corrupt" errors.
PngInfo check_png_structure(const std::string& path, const std::vector<uint8_t>& d) {
  PngInfo info;
  size_t pos = 8;
  bool first = true;
  for (;;) {
    if (d.size() - pos < 12) throw file_error(path, "truncated PNG file (no IEND chunk)");
    uint32_t len = be32(&d[pos]);
    const uint8_t* type = &d[pos + 4];
    std::string tname(reinterpret_cast<const char*>(type), 4);
    for (char& c : tname)
      if (!std::isalpha(static_cast<unsigned char>(c))) c = '?';
    if (len > 0x7FFFFFFFu) throw file_error(path, "corrupt PNG (bad length of chunk '" + tname + "')");
    if (d.size() - pos - 12 < len)
      throw file_error(path, "truncated PNG file (chunk '" + tname + "' cut short)");
    uint32_t crc = crc32_update(0xFFFFFFFFu, type, 4 + static_cast<size_t>(len)) ^ 0xFFFFFFFFu;
    if (crc != be32(&d[pos + 8 + len]))
      throw file_error(path, "corrupt PNG (bad CRC in chunk '" + tname + "')");
    if (first) {
      if (tname != "IHDR" || len != 13) throw file_error(path, "corrupt PNG (IHDR chunk missing)");
      check_declared_size(path, "PNG", be32(&d[pos + 8]), be32(&d[pos + 8 + 4]));
      info.bit_depth = d[pos + 8 + 8];
      info.color_type = d[pos + 8 + 9];
      first = false;
    }
    pos += 12 + static_cast<size_t>(len);
    if (tname == "IEND") return info;
  }
}

// Walks the JPEG marker structure (segments by length, entropy-coded data scanned for the
// next marker) and requires the end-of-image marker.
void check_jpeg_structure(const std::string& path, const std::vector<uint8_t>& d) {
  const size_t n = d.size();
  size_t pos = 2;  // after SOI
  bool saw_scan = false;
  while (pos < n) {
    if (d[pos] != 0xFF) {  // extraneous bytes: skip to the next marker, as libjpeg does
      ++pos;
      continue;
    }
    while (pos < n && d[pos] == 0xFF) ++pos;  // fill bytes
    if (pos >= n) break;
    uint8_t m = d[pos++];
    if (m == 0xD9) {
      if (!saw_scan) throw file_error(path, "corrupt JPEG (no image data before end marker)");
      return;
    }
    if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD8)) continue;  // standalone markers
    if (n - pos < 2) break;
    size_t len = (size_t(d[pos]) << 8) | d[pos + 1];
    if (len < 2) throw file_error(path, "corrupt JPEG (bad segment length)");
    if (n - pos < len) break;
    // Start of frame (SOF0-SOF15 but DHT C4, JPG C8, DAC CC): precision, height, width.
    if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC && len >= 7) {
      const uint64_t h = (uint64_t(d[pos + 3]) << 8) | d[pos + 4], w = (uint64_t(d[pos + 5]) << 8) | d[pos + 6];
      if (h > 0) check_declared_size(path, "JPEG", w, h);  // height 0: given later by a DNL marker
    }
    pos += len;
    if (m == 0xDA) {  // start of scan: entropy-coded data follows up to the next marker
      saw_scan = true;
      while (pos + 1 < n) {
        if (d[pos] == 0xFF) {
          uint8_t next = d[pos + 1];
          if (next == 0x00 || (next >= 0xD0 && next <= 0xD7) || next == 0xFF) {
            pos += (next == 0xFF) ? 1 : 2;
            continue;
          }
          break;
        }
        ++pos;
      }
      if (pos + 1 >= n) break;
    }
  }
  throw file_error(path, "truncated JPEG file (no end-of-image marker)");
}

// ---------------------------------------------------------------- JPEG

// PIL's convert("RGB") of a CMYK image (Pillow 9.4, checked over every (C, K) pair by
// tests/python/test_preprocess.py): with PIL's C and K, nk = 255 - K and
// R = nk - muldiv255(C, nk), where muldiv255(a, b) = ((t >> 8) + t) >> 8, t = a * b + 128
// (a * b / 255 rounded). PIL's C = 255 - c and K = 255 - k for the bytes c, k libjpeg gives
// (its rawmode "CMYK;I": Adobe's inverted CMYK, assumed for every 4-component JPEG).
inline uint8_t cmyk_channel_to_rgb(uint8_t c, uint8_t k) {
  const int nk = k;
  const int t = (255 - c) * nk + 128;
  const int v = nk - (((t >> 8) + t) >> 8);
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// Everything decode_jpeg() owns across its setjmp (see "libjpeg error handling").
struct JpegDecoder {
  jpeg_decompress_struct cinfo;
  JpegErrorManager err;
  jpeg_progress_mgr progress;
  bool created = false;
  Image8 img;
  std::vector<uint8_t> buffer;      // decoded rows of a greyscale or CMYK image
  std::vector<JSAMPROW> rows;
  JpegDecoder() {
    std::memset(&cinfo, 0, sizeof cinfo);
    std::memset(&err.pub, 0, sizeof err.pub);
    std::memset(&progress, 0, sizeof progress);
  }
  JpegDecoder(const JpegDecoder&) = delete;
  JpegDecoder& operator=(const JpegDecoder&) = delete;
  ~JpegDecoder() {
    if (created) jpeg_destroy_decompress(&cinfo);
  }
};

Error jpeg_failure(const std::string& path, const JpegErrorManager& e) {
  if (e.too_many_scans)
    return file_error(path, "corrupt JPEG (more than " + std::to_string(kMaxJpegScans) + " scans)");
  if (e.code == JWRN_JPEG_EOF) return file_error(path, "truncated JPEG file (premature end of data)");
  std::string m = e.message;
  const std::string prefix = "Corrupt JPEG data: ";
  if (m.compare(0, prefix.size(), prefix) == 0) m.erase(0, prefix.size());
  if (e.code == JERR_OUT_OF_MEMORY) return file_error(path, "out of memory decoding the JPEG (" + m + ")");
  return file_error(path, "corrupt JPEG (" + m + ")");
}

// The file's bytes (already through check_jpeg_structure) decoded as PIL decodes them.
Image8 decode_jpeg(const std::string& path, const std::vector<uint8_t>& d) {
  const std::unique_ptr<JpegDecoder> dec = std::make_unique<JpegDecoder>();
  jpeg_decompress_struct* const ci = &dec->cinfo;
  ci->err = jpeg_std_error(&dec->err.pub);
  dec->err.pub.error_exit = pg_jpeg_fail;
  dec->err.pub.emit_message = pg_jpeg_emit_message;
  dec->err.pub.output_message = pg_jpeg_output_message;
  if (setjmp(dec->err.jump)) throw jpeg_failure(path, dec->err);

  jpeg_create_decompress(ci);
  dec->created = true;
  dec->progress.progress_monitor = pg_jpeg_progress;
  ci->progress = &dec->progress;
  jpeg_mem_src(ci, d.data(), static_cast<unsigned long>(d.size()));
  jpeg_read_header(ci, TRUE);
  check_declared_size(path, "JPEG", ci->image_width, ci->image_height);
  const int comps = ci->num_components;
  if (comps == 1) ci->out_color_space = JCS_GRAYSCALE;
  else if (comps == 3) ci->out_color_space = JCS_RGB;
  else if (comps == 4) ci->out_color_space = JCS_CMYK;
  else throw file_error(path, "unsupported JPEG (" + std::to_string(comps) + " components; PIL reads 1, 3 or 4)");
  // Everything else stays at libjpeg's defaults, as PIL leaves it.
  jpeg_start_decompress(ci);
  const int w = static_cast<int>(ci->output_width), h = static_cast<int>(ci->output_height);
  if (ci->output_components != comps || w != static_cast<int>(ci->image_width) ||
      h != static_cast<int>(ci->image_height))
    throw file_error(path, "corrupt JPEG (unexpected decoder output)");
  Image8& img = dec->img;
  img.w = w;
  img.h = h;
  img.rgb.resize(static_cast<size_t>(w) * h * 3);
  const size_t out_row = static_cast<size_t>(w) * 3, in_row = static_cast<size_t>(w) * comps;
  const int batch = std::max(1, ci->rec_outbuf_height);
  dec->rows.resize(static_cast<size_t>(batch));
  if (comps != 3) dec->buffer.resize(in_row * batch);
  while (ci->output_scanline < ci->output_height) {
    const int y0 = static_cast<int>(ci->output_scanline), n = std::min(batch, h - y0);
    for (int i = 0; i < n; ++i)
      dec->rows[i] = comps == 3 ? &img.rgb[(y0 + i) * out_row] : &dec->buffer[i * in_row];
    const int got = static_cast<int>(jpeg_read_scanlines(ci, dec->rows.data(), static_cast<JDIMENSION>(n)));
    if (got <= 0) throw file_error(path, "corrupt JPEG (decoder returned no rows)");
    if (comps == 3) continue;
    for (int i = 0; i < got; ++i) {
      const uint8_t* in = &dec->buffer[i * in_row];
      uint8_t* out = &img.rgb[(y0 + i) * out_row];
      if (comps == 1) {
        for (int x = 0; x < w; ++x) out[x * 3] = out[x * 3 + 1] = out[x * 3 + 2] = in[x];
      } else {
        for (int x = 0; x < w; ++x) {
          const uint8_t k = in[x * 4 + 3];
          out[x * 3 + 0] = cmyk_channel_to_rgb(in[x * 4 + 0], k);
          out[x * 3 + 1] = cmyk_channel_to_rgb(in[x * 4 + 1], k);
          out[x * 3 + 2] = cmyk_channel_to_rgb(in[x * 4 + 2], k);
        }
      }
    }
  }
  jpeg_finish_decompress(ci);  // reads up to the end marker (PIL does too)
  return std::move(dec->img);
}

std::string stb_reason() {
  const char* r = stbi_failure_reason();
  return r ? printable(r) : "unknown error";  // stb quotes raw chunk-type bytes
}

void check_size(int w, int h) {
  if (w < 1 || h < 1) throw Error("image: empty size " + std::to_string(w) + "x" + std::to_string(h));
}

}  // namespace

Image8 load_image_rgb(const std::string& path) {
  std::vector<uint8_t> d = read_file_bytes(path);
  bool png = d.size() >= 8 && std::memcmp(d.data(), kPngSig, 8) == 0;
  bool jpeg = d.size() >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF;
  if (!png && !jpeg) {
    if (d.size() < 8 && d.size() >= 1 && d[0] == 0x89) throw file_error(path, "truncated PNG file");
    throw file_error(path, "not a PNG or JPEG image");
  }
  if (jpeg) {
    check_jpeg_structure(path, d);  // the declared size is refused before anything is decoded
    return decode_jpeg(path, d);
  }
  const PngInfo pinfo = check_png_structure(path, d);
  if (d.size() > static_cast<size_t>(std::numeric_limits<int>::max()))
    throw file_error(path, "file too large");
  const int len = static_cast<int>(d.size());

  int w = 0, h = 0, comp = 0;
  if (!stbi_info_from_memory(d.data(), len, &w, &h, &comp))
    throw file_error(path, "corrupt PNG (" + stb_reason() + ")");
  if (w < 1 || h < 1) throw file_error(path, "corrupt PNG (empty image)");
  check_declared_size(path, "PNG", static_cast<uint64_t>(w), static_cast<uint64_t>(h));

  Image8 img;
  if (pinfo.bit_depth == 16 && pinfo.color_type == 0) {
    // 16-bit greyscale: PIL opens it as mode "I" and convert("RGB") clamps the 16-bit
    // value to 0..255 (it does not rescale). Other 16-bit PNGs keep the high byte, which
    // is what stb_image's 8-bit conversion does as well.
    int c = 0;
    stbi_us* px = stbi_load_16_from_memory(d.data(), len, &w, &h, &c, 0);
    if (!px) throw file_error(path, "corrupt PNG (" + stb_reason() + ")");
    img.w = w;
    img.h = h;
    img.rgb.resize(static_cast<size_t>(w) * h * 3);
    for (size_t i = 0, n = static_cast<size_t>(w) * h; i < n; ++i) {
      uint8_t g = static_cast<uint8_t>(std::min<int>(px[i * c], 255));
      img.rgb[i * 3] = img.rgb[i * 3 + 1] = img.rgb[i * 3 + 2] = g;
    }
    stbi_image_free(px);
    return img;
  }
  // req_comp = 3: grey replicated, alpha dropped (no compositing), palettes expanded.
  int c = 0;
  stbi_uc* px = stbi_load_from_memory(d.data(), len, &w, &h, &c, 3);
  if (!px) throw file_error(path, "corrupt PNG (" + stb_reason() + ")");
  img.w = w;
  img.h = h;
  img.rgb.assign(px, px + static_cast<size_t>(w) * h * 3);
  stbi_image_free(px);
  return img;
}

// ---------------------------------------------------------------- resampling

namespace {
// Pillow's filters (Resample.c): the triangle (support 1) and the bicubic convolution kernel
// with a = -0.5 (support 2).
double triangle_filter(double t) {
  if (t < 0.0) t = -t;
  return t < 1.0 ? 1.0 - t : 0.0;
}
double bicubic_filter(double x) {
  const double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}
}  // namespace

const char* interpolation_name(Interpolation i) { return i == Interpolation::bicubic ? "bicubic" : "bilinear"; }

bool parse_interpolation(const std::string& name, Interpolation* out) {
  if (name == "bilinear") *out = Interpolation::bilinear;
  else if (name == "bicubic") *out = Interpolation::bicubic;
  else return false;
  return true;
}

ResampleWindows bilinear_windows(int in_size, int out_size) {
  return resample_windows(in_size, out_size, Interpolation::bilinear);
}

ResampleWindows resample_windows(int in_size, int out_size, Interpolation interp) {
  if (in_size < 1 || out_size < 1)
    throw Error("resize: bad sizes " + std::to_string(in_size) + " -> " + std::to_string(out_size));
  const bool cubic = interp == Interpolation::bicubic;
  // Pillow passes the box edges as float (in0 = 0, in1 = in_size).
  const float in0 = 0.0f, in1 = static_cast<float>(in_size);
  const double scale = static_cast<double>(in1 - in0) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = (cubic ? 2.0 : 1.0) * filterscale;
  ResampleWindows win;
  win.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  win.start.resize(out_size);
  win.count.resize(out_size);
  win.coeffs.assign(static_cast<size_t>(out_size) * win.ksize, 0.0);
  const double ss = 1.0 / filterscale;
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = in0 + (xx + 0.5) * scale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double* k = &win.coeffs[static_cast<size_t>(xx) * win.ksize];
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double t = (x + xmin - center + 0.5) * ss;
      const double w = cubic ? bicubic_filter(t) : triangle_filter(t);
      k[x] = w;
      ww += w;
    }
    for (int x = 0; x < xmax; ++x)
      if (ww != 0.0) k[x] /= ww;
    win.start[xx] = xmin;
    win.count[xx] = xmax;
  }
  return win;
}

int32_t fixed_point_coeff(double c) {
  const double one = static_cast<double>(1 << kPrecisionBits);
  return c < 0 ? static_cast<int32_t>(-0.5 + c * one) : static_cast<int32_t>(0.5 + c * one);
}

namespace {

inline uint8_t clip8(int64_t v) {
  if (v >= (int64_t(1) << kPrecisionBits << 8)) return 255;
  if (v <= 0) return 0;
  return static_cast<uint8_t>(v >> kPrecisionBits);
}

std::vector<int32_t> fixed_coeffs(const ResampleWindows& w) {
  std::vector<int32_t> k(w.coeffs.size());
  for (size_t i = 0; i < k.size(); ++i) k[i] = fixed_point_coeff(w.coeffs[i]);
  return k;
}

}  // namespace

Image8 resize_bilinear_aa(const Image8& img, int new_w, int new_h) {
  return resize_aa(img, new_w, new_h, Interpolation::bilinear);
}

Image8 resize_aa(const Image8& img, int new_w, int new_h, Interpolation interp) {
  check_size(img.w, img.h);
  check_size(new_w, new_h);
  if (img.rgb.size() != static_cast<size_t>(img.w) * img.h * 3) throw Error("image: bad pixel buffer size");
  if (new_w == img.w && new_h == img.h) return img;
  const bool need_h = new_w != img.w, need_v = new_h != img.h;
  ResampleWindows wh = resample_windows(img.w, new_w, interp);
  ResampleWindows wv = resample_windows(img.h, new_h, interp);

  // Rows of the source that the vertical pass reads.
  int yfirst = 0, ylast = img.h;
  if (need_v) {
    yfirst = wv.start[0];
    ylast = wv.start[new_h - 1] + wv.count[new_h - 1];
  }

  Image8 tmp;
  const Image8* src = &img;
  int row0 = 0;  // source row of src's row 0
  if (need_h) {
    const std::vector<int32_t> k = fixed_coeffs(wh);
    tmp.w = new_w;
    tmp.h = ylast - yfirst;
    tmp.rgb.resize(static_cast<size_t>(tmp.w) * tmp.h * 3);
    for (int y = 0; y < tmp.h; ++y) {
      const uint8_t* in = &img.rgb[static_cast<size_t>(y + yfirst) * img.w * 3];
      uint8_t* out = &tmp.rgb[static_cast<size_t>(y) * new_w * 3];
      for (int xx = 0; xx < new_w; ++xx) {
        const int32_t* kk = &k[static_cast<size_t>(xx) * wh.ksize];
        const uint8_t* p = in + static_cast<size_t>(wh.start[xx]) * 3;
        int64_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
        for (int x = 0; x < wh.count[xx]; ++x) {
          s0 += p[x * 3 + 0] * int64_t(kk[x]);
          s1 += p[x * 3 + 1] * int64_t(kk[x]);
          s2 += p[x * 3 + 2] * int64_t(kk[x]);
        }
        out[xx * 3 + 0] = clip8(s0);
        out[xx * 3 + 1] = clip8(s1);
        out[xx * 3 + 2] = clip8(s2);
      }
    }
    src = &tmp;
    row0 = yfirst;
  }
  if (!need_v) return need_h ? tmp : img;

  const std::vector<int32_t> k = fixed_coeffs(wv);
  Image8 out;
  out.w = src->w;
  out.h = new_h;
  out.rgb.resize(static_cast<size_t>(out.w) * new_h * 3);
  const size_t row_len = static_cast<size_t>(src->w) * 3;
  std::vector<int64_t> acc(row_len);
  for (int yy = 0; yy < new_h; ++yy) {
    std::fill(acc.begin(), acc.end(), int64_t(1) << (kPrecisionBits - 1));
    const int32_t* kk = &k[static_cast<size_t>(yy) * wv.ksize];
    for (int y = 0; y < wv.count[yy]; ++y) {
      const uint8_t* in = &src->rgb[static_cast<size_t>(wv.start[yy] + y - row0) * row_len];
      const int64_t c = kk[y];
      for (size_t i = 0; i < row_len; ++i) acc[i] += in[i] * c;
    }
    uint8_t* o = &out.rgb[static_cast<size_t>(yy) * row_len];
    for (size_t i = 0; i < row_len; ++i) o[i] = clip8(acc[i]);
  }
  return out;
}

Tensor resize_plane(const Tensor& plane, int new_h, int new_w) {
  if (plane.ndim() != 2) throw Error("resize: expected a [H, W] plane, got " + plane.shape_str());
  const int h = static_cast<int>(plane.dim(0)), w = static_cast<int>(plane.dim(1));
  check_size(w, h);
  check_size(new_w, new_h);
  if (h == new_h && w == new_w) return plane.clone();
  ResampleWindows wh = bilinear_windows(w, new_w), wv = bilinear_windows(h, new_h);
  std::vector<float> tmp(static_cast<size_t>(h) * new_w);
  for (int y = 0; y < h; ++y)
    for (int xx = 0; xx < new_w; ++xx) {
      double s = 0;
      for (int x = 0; x < wh.count[xx]; ++x)
        s += plane[static_cast<int64_t>(y) * w + wh.start[xx] + x] * wh.coeffs[size_t(xx) * wh.ksize + x];
      tmp[static_cast<size_t>(y) * new_w + xx] = static_cast<float>(s);
    }
  Tensor out({new_h, new_w});
  for (int yy = 0; yy < new_h; ++yy)
    for (int xx = 0; xx < new_w; ++xx) {
      double s = 0;
      for (int y = 0; y < wv.count[yy]; ++y)
        s += tmp[static_cast<size_t>(wv.start[yy] + y) * new_w + xx] * wv.coeffs[size_t(yy) * wv.ksize + y];
      out[static_cast<int64_t>(yy) * new_w + xx] = static_cast<float>(s);
    }
  return out;
}

// ---------------------------------------------------------------- torchvision transforms

void resize_short_side_size(int w, int h, int short_side, int* new_w, int* new_h) {
  check_size(w, h);
  if (short_side < 1) throw Error("resize: size must be positive, got " + std::to_string(short_side));
  const int shorter = std::min(w, h), longer = std::max(w, h);
  // Python: int(size * long / short), a true division then truncation.
  const double q = static_cast<double>(static_cast<int64_t>(short_side) * longer) / shorter;
  if (q > 1e8) throw Error("resize: output size too large");
  const int new_long = static_cast<int>(q);
  if (w <= h) {
    *new_w = short_side;
    *new_h = new_long;
  } else {
    *new_w = new_long;
    *new_h = short_side;
  }
}

int center_crop_offset(int size, int crop) {
  if (crop > size) return -((crop - size) / 2);
  const int d = size - crop;
  int half = d / 2;
  if ((d & 1) && (half & 1)) ++half;  // x.5 rounds to the even neighbour, as Python's round
  return half;
}

Image8 center_crop(const Image8& img, int crop_w, int crop_h) {
  check_size(img.w, img.h);
  check_size(crop_w, crop_h);
  const int left = center_crop_offset(img.w, crop_w), top = center_crop_offset(img.h, crop_h);
  Image8 out;
  out.w = crop_w;
  out.h = crop_h;
  out.rgb.assign(static_cast<size_t>(crop_w) * crop_h * 3, 0);  // zero padding where outside
  const int x0 = std::max(0, left), x1 = std::min(img.w, left + crop_w);
  for (int y = 0; y < crop_h; ++y) {
    const int sy = top + y;
    if (sy < 0 || sy >= img.h || x1 <= x0) continue;
    std::memcpy(&out.rgb[(static_cast<size_t>(y) * crop_w + (x0 - left)) * 3],
                &img.rgb[(static_cast<size_t>(sy) * img.w + x0) * 3], static_cast<size_t>(x1 - x0) * 3);
  }
  return out;
}

namespace {
const float kMean[3] = {0.485f, 0.456f, 0.406f};
const float kStd[3] = {0.229f, 0.224f, 0.225f};
}  // namespace

Image8 imagenet_crop(const Image8& img, int resize, int crop) {
  return resize_and_crop(img, resize, crop, Interpolation::bilinear);
}

Image8 resize_and_crop(const Image8& img, int resize, int crop, Interpolation interp) {
  check_size(img.w, img.h);
  Image8 cur = img;
  if (resize > 0) {
    int nw = 0, nh = 0;
    resize_short_side_size(img.w, img.h, resize, &nw, &nh);
    if (nw != img.w || nh != img.h) cur = resize_aa(img, nw, nh, interp);
  }
  if (crop > 0) cur = center_crop(cur, crop, crop);
  return cur;
}

Tensor preprocess_imagenet(const Image8& img, int resize, int crop) {
  return normalize_imagenet(imagenet_crop(img, resize, crop));
}

Tensor normalize_imagenet(const Image8& cur) { return normalize_rgb(cur, kMean, kStd); }

Tensor normalize_rgb(const Image8& cur, const float mean[3], const float std[3]) {
  const int64_t hw = static_cast<int64_t>(cur.w) * cur.h;
  Tensor t({3, cur.h, cur.w});
  float* o = t.data();
  for (int c = 0; c < 3; ++c)
    for (int64_t i = 0; i < hw; ++i) {
      // torchvision: ToTensor divides by 255 in float32, Normalize subtracts and divides.
      const float v = static_cast<float>(cur.rgb[i * 3 + c]) / 255.0f;
      o[c * hw + i] = (v - mean[c]) / std[c];
    }
  return t;
}

Image8 denormalize_imagenet(const Tensor& chw) {
  bool ok = (chw.ndim() == 3 && chw.dim(0) == 3) || (chw.ndim() == 4 && chw.dim(0) == 1 && chw.dim(1) == 3);
  if (!ok) throw Error("denormalize: expected a [3, H, W] tensor, got " + chw.shape_str());
  Image8 img;
  img.h = static_cast<int>(chw.dim(-2));
  img.w = static_cast<int>(chw.dim(-1));
  const int64_t hw = static_cast<int64_t>(img.w) * img.h;
  img.rgb.resize(static_cast<size_t>(hw) * 3);
  for (int c = 0; c < 3; ++c)
    for (int64_t i = 0; i < hw; ++i) {
      float v = (chw[c * hw + i] * kStd[c] + kMean[c]) * 255.0f;
      if (!(v > 0.0f)) v = 0.0f;  // also NaN
      if (v > 255.0f) v = 255.0f;
      img.rgb[i * 3 + c] = static_cast<uint8_t>(std::lround(v));
    }
  return img;
}

// ---------------------------------------------------------------- PNG writing

namespace {
void append_bytes(void* ctx, void* data, int size) {
  auto* buf = static_cast<std::string*>(ctx);
  buf->append(static_cast<const char*>(data), static_cast<size_t>(size));
}
}  // namespace

void write_file_atomically(const std::string& path, const void* data, size_t size) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw file_error(path, "cannot write (" + errno_text() + ")");
  bool ok = std::fwrite(data, 1, size, f) == size;
  int err = errno;
  if (std::fclose(f) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (!ok) {
    std::remove(tmp.c_str());
    throw file_error(path, std::string("cannot write (") + std::strerror(err) + ")");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    err = errno;
    std::remove(tmp.c_str());
    throw file_error(path, std::string("cannot write (") + std::strerror(err) + ")");
  }
}

void save_png(const std::string& path, const Image8& img) {
  check_size(img.w, img.h);
  if (img.rgb.size() != static_cast<size_t>(img.w) * img.h * 3) throw Error("image: bad pixel buffer size");
  std::string buf;
  if (!stbi_write_png_to_func(append_bytes, &buf, img.w, img.h, 3, img.rgb.data(), img.w * 3))
    throw file_error(path, "cannot encode PNG");
  write_file_atomically(path, buf.data(), buf.size());
}

// ---------------------------------------------------------------- model inputs

bool is_npy_file(const std::string& path) {
  // Under core/file.h's rules, so that a FIFO is never opened for reading here (the image
  // or .npy reader that follows refuses it with the reason).
  try {
    const std::string head = read_file_head(path, 6, limits::kNpyFileBytes, "a .npy file");
    return head.size() == 6 && std::memcmp(head.data(), "\x93NUMPY", 6) == 0;
  } catch (const Error&) {
    return false;
  }
}

Tensor load_input_tensor(const std::string& path, int resize, int crop) {
  if (is_npy_file(path)) {
    Tensor t = load_npy(path);
    if (t.ndim() == 4 && t.dim(0) == 1) t = t.reshape({t.dim(1), t.dim(2), t.dim(3)});
    if (t.ndim() != 3 || t.dim(0) != 3 || t.dim(1) < 1 || t.dim(2) < 1)
      throw file_error(path, "expected a [3, H, W] or [1, 3, H, W] input tensor, got " + t.shape_str());
    return t;
  }
  return preprocess_imagenet(load_image_rgb(path), resize, crop);
}

}  // namespace pg::io
