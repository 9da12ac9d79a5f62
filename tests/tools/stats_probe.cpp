// stats_probe: runs the statistics of parchgrad/stats_math.h on numbers read from text
// files (whitespace-separated), for comparison with scipy in tests/python.
//
//   stats_probe shapiro FILE [scipy110|double]   -> "W p"
//   stats_probe ttest FILE_A FILE_B student|welch -> p  (alternative: mean A > mean B)
//   stats_probe classrest VALUES LABELS student|welch
//                                                 -> one p per class 0..max(label), one a line
//
// Numbers are printed with %.17g (NaN as "nan"). Errors go to stderr, exit status 1.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "parchgrad/stats_math.h"

namespace {

std::vector<double> read_numbers(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw pg::file_error(path, "cannot open");
  std::vector<double> v;
  std::string tok;
  while (f >> tok) {
    char* end = nullptr;
    const double x = std::strtod(tok.c_str(), &end);
    if (end == tok.c_str() || *end != '\0') throw pg::file_error(path, "not a number: " + tok);
    v.push_back(x);
  }
  return v;
}

bool parse_welch(const std::string& s) {
  if (s == "welch") return true;
  if (s == "student") return false;
  throw pg::Error("test must be student or welch, got " + s);
}

void print(double x) { std::printf("%.17g", x); }

int usage() {
  std::fprintf(stderr,
               "usage: stats_probe shapiro FILE [scipy110|double]\n"
               "       stats_probe ttest FILE_A FILE_B student|welch\n"
               "       stats_probe classrest VALUES LABELS student|welch\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  namespace st = pg::stats;
  if (argc < 3) return usage();
  const std::string cmd = argv[1];
  try {
    if (cmd == "shapiro" && (argc == 3 || argc == 4)) {
      st::ShapiroMode mode = st::ShapiroMode::Scipy110;
      if (argc == 4) {
        const std::string m = argv[3];
        if (m == "double") mode = st::ShapiroMode::Double;
        else if (m != "scipy110") throw pg::Error("mode must be scipy110 or double, got " + m);
      }
      const st::ShapiroResult r = st::shapiro_wilk(read_numbers(argv[2]), mode);
      print(r.w);
      std::printf(" ");
      print(r.p);
      std::printf("\n");
    } else if (cmd == "ttest" && argc == 5) {
      const bool welch = parse_welch(argv[4]);
      st::ClassMoments a, b;
      for (double x : read_numbers(argv[2])) a.add(x);
      for (double x : read_numbers(argv[3])) b.add(x);
      print(st::ttest_greater_p(double(a.n), a.mean(), a.m2(), double(b.n), b.mean(), b.m2(),
                                welch));
      std::printf("\n");
    } else if (cmd == "classrest" && argc == 5) {
      const bool welch = parse_welch(argv[4]);
      const std::vector<double> values = read_numbers(argv[2]);
      const std::vector<double> labels = read_numbers(argv[3]);
      if (values.size() != labels.size())
        throw pg::Error("classrest: " + std::to_string(values.size()) + " values but " +
                        std::to_string(labels.size()) + " labels");
      std::vector<st::ClassMoments> classes;
      for (size_t i = 0; i < values.size(); ++i) {
        const double l = labels[i];
        if (!(l >= 0) || l != static_cast<double>(static_cast<long>(l)) || l > 1e6)
          throw pg::Error("classrest: bad label " + std::to_string(l));
        const size_t k = static_cast<size_t>(l);
        if (k >= classes.size()) classes.resize(k + 1);
        classes[k].add(values[i]);
      }
      for (double p : st::class_vs_rest_p(classes, welch)) {
        print(p);
        std::printf("\n");
      }
    } else {
      return usage();
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "stats_probe: %s\n", e.what());
    return 1;
  }
  return 0;
}
