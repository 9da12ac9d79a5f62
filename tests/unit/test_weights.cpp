// Unit tests of the weight readers: the restricted unpickler on hand-made pickles,
// dtype conversion, tensor materialisation and safetensors round trips.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>

#include "core/error.h"
#include "weights/detail.h"
#include "weights/dtype.h"
#include "weights/pickle.h"
#include "weights/state_dict.h"

using namespace pg::weights;
using namespace std::string_literals;
using pickle::Kind;
using pickle::Value;

namespace {

std::string bytes(std::initializer_list<int> b) {
  std::string s;
  for (int c : b) s.push_back(static_cast<char>(c));
  return s;
}
std::string u32(uint32_t v) {
  return bytes({int(v & 0xff), int((v >> 8) & 0xff), int((v >> 16) & 0xff), int(v >> 24)});
}
std::string binunicode(const std::string& s) { return "X" + u32(uint32_t(s.size())) + s; }

const Value* parse(const std::string& p, pickle::Arena& arena, size_t* end = nullptr) {
  size_t pos = 0;
  const Value* v = pickle::unpickle(reinterpret_cast<const uint8_t*>(p.data()), p.size(), &pos,
                                    arena, "t.pkl", "data.pkl");
  if (end) *end = pos;
  return v;
}

std::string error_of(const std::string& p) {
  pickle::Arena arena;
  try {
    parse(p, arena);
  } catch (const pg::Error& e) {
    return e.what();
  }
  return "";
}

// OrderedDict {"w": tensor(FloatStorage '0', offset 1, size (2, 3), stride (1, 2))}.
std::string tensor_pickle() {
  return "\x80\x02" "ccollections\nOrderedDict\nq\x00)R" "q\x01("s + binunicode("w") +
         "ctorch._utils\n_rebuild_tensor_v2\nq\x02((" + binunicode("storage") +
         "ctorch\nFloatStorage\n" + binunicode("0") + binunicode("cpu") + "K\x08tQ" +
         "K\x01" "K\x02K\x03\x86" "K\x01K\x02\x86" "\x89" "h\x00)R" "tR" "u"s +
         "}" + binunicode("_metadata") + "}s" + "b.";
}

std::string temp_path(const std::string& name) {
  return "/tmp/pg_weights_unit_" + std::to_string(::getpid()) + "_" + name;
}

}  // namespace

TEST_CASE("weights: unpickler reads scalars, strings, containers and memo") {
  // {'a': 5, 'b': [-2, 70000, 3.5, None, True], 'c': ('x', b'yz'), 'd': <memo of b>, 'e': big}
  std::string p = "\x80\x02}q\x00("s + binunicode("a") + "K\x05" + binunicode("b") + "]q\x01(" +
                  "J" + u32(uint32_t(-2)) + "J" + u32(70000) +
                  bytes({'G', 0x40, 0x0c, 0, 0, 0, 0, 0, 0}) + "N\x88" + "e" +
                  binunicode("c") + "U\x01x" + "C\x02yz" + "\x86" + binunicode("d") + "h\x01" +
                  binunicode("e") + bytes({0x8a, 0x02, 0x00, 0xff}) + "u.";
  pickle::Arena arena;
  size_t end = 0;
  const Value* v = parse(p, arena, &end);
  CHECK(end == p.size());
  REQUIRE(v->kind == Kind::Dict);
  REQUIRE(v->entries.size() == 5);
  CHECK(v->get("a")->i == 5);
  const Value* b = v->get("b");
  REQUIRE(b->kind == Kind::List);
  REQUIRE(b->items.size() == 5);
  CHECK(b->items[0]->i == -2);
  CHECK(b->items[1]->i == 70000);
  CHECK(b->items[2]->f == 3.5);
  CHECK(b->items[3]->kind == Kind::None);
  CHECK(b->items[4]->b);
  const Value* c = v->get("c");
  REQUIRE(c->kind == Kind::Tuple);
  CHECK(c->items[0]->str == "x");
  CHECK(c->items[1]->kind == Kind::Bytes);
  CHECK(c->items[1]->str == "yz");
  CHECK(v->get("d") == b);           // memo shares the object
  CHECK(v->get("e")->i == -256);     // LONG1 sign extension
  CHECK(v->get("zz") == nullptr);
}

TEST_CASE("weights: unpickler protocol 4 opcodes and consecutive pickles") {
  std::string p = std::string("\x80\x04\x95") + std::string(8, '\0') +
                  "\x8c\x0b" "collections\x94\x8c\x0bOrderedDict\x94\x93\x94)R\x94" +
                  "\x8c\x01k\x94K\x07s" + "." + "\x80\x02K\x09.";
  p[3] = 40;  // frame length (any value within the data)
  pickle::Arena arena;
  size_t pos = 0;
  const uint8_t* d = reinterpret_cast<const uint8_t*>(p.data());
  const Value* v = pickle::unpickle(d, p.size(), &pos, arena, "t.pkl", "x");
  REQUIRE(v->kind == Kind::Dict);
  CHECK(v->get("k")->i == 7);
  const Value* w = pickle::unpickle(d, p.size(), &pos, arena, "t.pkl", "x");
  CHECK(w->i == 9);
  CHECK(pos == p.size());
}

TEST_CASE("weights: unpickler builds tensor descriptions") {
  pickle::Arena arena;
  const Value* v = parse(tensor_pickle(), arena);
  REQUIRE(v->kind == Kind::Dict);
  REQUIRE(v->entries.size() == 1);  // BUILD state (_metadata) is not an item
  const Value* t = v->get("w");
  REQUIRE(t->kind == Kind::Tensor);
  CHECK(t->tensor->offset == 1);
  CHECK(t->tensor->size == std::vector<int64_t>{2, 3});
  CHECK(t->tensor->stride == std::vector<int64_t>{1, 2});
  const Value* pid = t->items[0]->items[0];
  REQUIRE(pid->kind == Kind::Tuple);
  CHECK(pid->items[1]->kind == Kind::Global);
  CHECK(pid->items[1]->str == "torch.FloatStorage");
  CHECK(pid->items[2]->str == "0");
  CHECK(pid->items[4]->i == 8);
}

TEST_CASE("weights: unpickler refuses foreign globals") {
  std::string g = "\x80\x02" "cos\nsystem\n" + binunicode("echo pwned") + "\x85R.";
  CHECK(error_of(g) == "t.pkl: refusing pickle global 'os.system'");
  std::string sg = "\x80\x04\x8c\x08" "builtins\x8c\x04" "eval\x93.";
  CHECK(error_of(sg) == "t.pkl: refusing pickle global 'builtins.eval'");
  CHECK(error_of("\x80\x02" "ctorch\nload\n.") == "t.pkl: refusing pickle global 'torch.load'");
  // Names from the file cannot break the one-line message.
  CHECK(error_of("\x80\x04\x8c\x03os\n\x8c\x06system\x93."s) ==
        "t.pkl: refusing pickle global 'os\\x0a.system'");
  CHECK(error_of("\x80\x02" "ccollections\ndefaultdict\n.") ==
        "t.pkl: refusing pickle global 'collections.defaultdict'");
  // Allowed globals are values, never called beyond building a description.
  CHECK(error_of("\x80\x02" "ctorch\nFloatStorage\n)R.").find("cannot be called") != std::string::npos);
  CHECK(error_of("\x80\x02" "ccollections\nOrderedDict\nK\x01\x85R.").find("OrderedDict with arguments") !=
        std::string::npos);
}

TEST_CASE("weights: unpickler rejects malformed pickles") {
  auto corrupt = [](const std::string& p) {
    std::string e = error_of(p);
    INFO(e);
    CHECK(e.rfind("t.pkl: corrupt pickle in data.pkl: ", 0) == 0);
  };
  corrupt("");                         // empty
  corrupt("\x80\x02R.");               // stack underflow
  corrupt("\x80\x02K");                // truncated argument
  corrupt("\x80\x02K\x01");            // no STOP
  corrupt("\x80\x02h\x05.");           // missing memo entry
  corrupt("\x80\x02]K\x01K\x02s.");    // SETITEM on a list
  corrupt("\x80\x02}K\x01" "a.");      // APPEND to a dict
  corrupt("\x80\x02]N" "b.");          // BUILD on a list
  corrupt("\x80\x02(K\x01.");          // STOP inside a MARK
  corrupt("\x80\x02K\x01K\x02.");      // two objects left
  corrupt("\x80\x02t.");               // TUPLE without MARK
  corrupt("\x80\x02(K\x01" "\x86.");   // TUPLE2 reaching below the MARK
  corrupt("\x80\x02X\xff\xff\xff\x7f" "abc.");  // string longer than the data
  corrupt("\x80\x02T\xff\xff\xff\xff.");       // negative BINSTRING length
  corrupt("\x80\x02" "I12\n.");        // text opcode not in the subset
  corrupt("\x80\x09N.");               // unknown protocol
  corrupt("\x80\x02" "cos" + std::string(300, 'x'));  // unterminated GLOBAL line
  corrupt("\x80\x02" "ctorch._utils\n_rebuild_tensor_v2\n(K\x01K\x00)))\x89NtR."s);  // storage not a pid
  corrupt("\x80\x02" "ctorch._utils\n_rebuild_tensor_v2\n(NQK\x00K\x02\x85))\x89NtR."s);  // size/stride
  // Every prefix of a valid pickle fails cleanly.
  const std::string good = tensor_pickle();
  for (size_t n = 0; n < good.size(); ++n) {
    std::string e = error_of(good.substr(0, n));
    CHECK_MESSAGE(!e.empty(), "prefix " << n);
  }
  CHECK(error_of(good).empty());
}

TEST_CASE("weights: dtype conversion") {
  CHECK(half_to_float(0x3c00) == 1.0f);
  CHECK(half_to_float(0xc000) == -2.0f);
  CHECK(half_to_float(0x7bff) == 65504.0f);
  CHECK(half_to_float(0x0001) == std::ldexp(1.0f, -24));  // smallest subnormal
  CHECK(half_to_float(0x03ff) == std::ldexp(1023.0f, -24));
  CHECK(std::isinf(half_to_float(0x7c00)));
  CHECK(std::isnan(half_to_float(0x7e00)));
  CHECK(std::signbit(half_to_float(0x8000)));
  CHECK(bf16_to_float(0x3f80) == 1.0f);
  CHECK(bf16_to_float(0xc040) == -3.0f);
  const uint8_t i64[] = {0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 7, 0, 0, 0, 0, 0, 0, 0};
  float out[2];
  convert_to_float(i64, DType::I64, 1, 2, out);
  CHECK(out[0] == -2.0f);
  CHECK(out[1] == 7.0f);
  const uint8_t b[] = {0, 3, 1};
  float ob[3];
  convert_to_float(b, DType::Bool, 1, 3, ob);
  CHECK((ob[0] == 0.0f && ob[1] == 1.0f && ob[2] == 1.0f));
  convert_to_float(b, DType::U8, 2, 2, ob);  // strided
  CHECK((ob[0] == 0.0f && ob[1] == 1.0f));
  const uint8_t be[] = {0x3f, 0x80, 0, 0};
  convert_to_float(be, DType::F32, 1, 1, ob, true);
  CHECK(ob[0] == 1.0f);
  DType t;
  CHECK(dtype_from_name("BF16", &t));
  CHECK(t == DType::BF16);
  CHECK_FALSE(dtype_from_name("F8_E4M3", &t));
}

TEST_CASE("weights: materialise strided views and bounds") {
  float storage[12];
  for (int i = 0; i < 12; ++i) storage[i] = float(i);
  auto* s = reinterpret_cast<const uint8_t*>(storage);
  // Transposed 3x4 view of a 4x3 matrix starting at element 0.
  pg::Tensor t = detail::materialise(s, 12, DType::F32, false, 0, {3, 4}, {1, 3}, "f", "tensor 't'");
  CHECK(t.shape() == std::vector<int64_t>{3, 4});
  CHECK(t[1] == 3.0f);
  CHECK(t[4] == 1.0f);
  CHECK(t[11] == 11.0f);
  pg::Tensor o = detail::materialise(s, 12, DType::F32, false, 5, {2, 2}, {3, 1}, "f", "tensor 'o'");
  CHECK((o[0] == 5.0f && o[1] == 6.0f && o[2] == 8.0f && o[3] == 9.0f));
  pg::Tensor z = detail::materialise(s, 12, DType::F32, false, 7, {}, {}, "f", "tensor 'z'");
  CHECK((z.ndim() == 0 && z.numel() == 1 && z[0] == 7.0f));
  pg::Tensor e = detail::materialise(s, 12, DType::F32, false, 0, {0, 5}, {5, 1}, "f", "tensor 'e'");
  CHECK(e.numel() == 0);
  pg::Tensor x = detail::materialise(s, 12, DType::F32, false, 2, {2, 3}, {0, 1}, "f", "tensor 'x'");
  CHECK((x[3] == 2.0f && x[5] == 4.0f));
  CHECK_THROWS_WITH_AS(detail::materialise(s, 12, DType::F32, false, 1, {4, 3}, {3, 1}, "f", "tensor 'b'"),
                       doctest::Contains("f: storage shorter than tensor: tensor 'b'"), pg::Error);
  CHECK_THROWS_AS(detail::materialise(s, 12, DType::F32, false, 12, {}, {}, "f", "t"), pg::Error);
  CHECK_THROWS_AS(detail::materialise(s, 12, DType::F32, false, 0, {2}, {-1}, "f", "t"), pg::Error);
  CHECK_THROWS_AS(detail::materialise(s, 12, DType::F32, false, -1, {2}, {1}, "f", "t"), pg::Error);
  CHECK_THROWS_AS(detail::materialise(s, 12, DType::F32, false, 0, {int64_t(1) << 40, int64_t(1) << 40},
                                      {0, 0}, "f", "t"),
                  pg::Error);
}

TEST_CASE("weights: module prefix stripping") {
  std::vector<std::string> a = {"module.fc.weight", "module.fc.bias"};
  detail::strip_module_prefix(a);
  CHECK(a == std::vector<std::string>{"fc.weight", "fc.bias"});
  std::vector<std::string> b = {"module.fc.weight", "fc.bias"};
  detail::strip_module_prefix(b);
  CHECK(b[0] == "module.fc.weight");
}

TEST_CASE("weights: safetensors round trip, metadata and errors") {
  StateDict sd;
  sd["b"] = pg::Tensor::filled({2, 3}, 1.5f);
  sd["a"] = pg::Tensor::filled({}, -4.0f);
  sd["e"] = pg::Tensor::zeros({0, 7});
  const std::string path = temp_path("rt.safetensors");
  save_safetensors(path, sd, {{"source", "x.pth"}});
  CHECK(detect_format(path) == "safetensors");
  StateDict back = load_state_dict(path);
  REQUIRE(back.size() == 3);
  CHECK(back["b"].shape() == std::vector<int64_t>{2, 3});
  CHECK(back["b"][5] == 1.5f);
  CHECK(back["a"].ndim() == 0);
  CHECK(back["a"][0] == -4.0f);
  CHECK(back["e"].shape() == std::vector<int64_t>{0, 7});
  CHECK(safetensors_metadata(path).at("source") == "x.pth");

  // Header is padded so data starts 8-byte aligned.
  std::ifstream in(path, std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(uint8_t(all[i])) << (8 * i);
  CHECK((8 + n) % 8 == 0);
  CHECK(all.size() == 8 + n + 7 * 4);

  // Every truncation is an error naming the file.
  const std::string cut = temp_path("cut.safetensors");
  for (size_t len : {size_t(0), size_t(7), size_t(12), size_t(8 + n - 1), all.size() - 1}) {
    std::ofstream(cut, std::ios::binary) << all.substr(0, len);
    CHECK_THROWS_WITH_AS(load_state_dict(cut), doctest::Contains((cut + ": ").c_str()), pg::Error);
  }
  std::string bad = all;
  bad[8] = '{';
  bad[9] = '[';  // broken JSON
  std::ofstream(cut, std::ios::binary) << bad;
  CHECK_THROWS_WITH_AS(load_safetensors(cut), doctest::Contains("bad safetensors header"), pg::Error);
  std::remove(cut.c_str());
  std::remove(path.c_str());

  CHECK_THROWS_WITH_AS(load_state_dict("/nonexistent/w.pth"),
                       "/nonexistent/w.pth: cannot open (No such file or directory)", pg::Error);
  const std::string junk = temp_path("junk.bin");
  std::ofstream(junk, std::ios::binary) << "hello, not weights";
  CHECK_THROWS_WITH_AS(load_state_dict(junk), (junk + ": not a .pth or .safetensors weight file").c_str(),
                       pg::Error);
  std::remove(junk.c_str());
}
