#include "tools/cli/reports.h"

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "tools/cli/common.h"

namespace pg::cli {

namespace fs = std::filesystem;
using nlohmann::json;

// ---- eval's REPORT.jsonl --------------------------------------------------------------------

std::string image_key(const std::string& path) {
  std::error_code ec;
  const fs::path abs = fs::weakly_canonical(fs::absolute(path, ec), ec);
  return ec ? path : abs.generic_string();
}

std::string key_of(const std::string& image, const std::string& method) { return image_key(image) + "\t" + method; }

std::string record_image(const json& rec) {
  return rec.contains("image_path") ? rec["image_path"].get<std::string>() : image_key(rec["image"].get<std::string>());
}

std::string record_key(const json& rec, const std::string& method) { return record_image(rec) + "\t" + method; }

namespace {

// obj[key] when obj is an object that has it, else nullptr.
const json* field(const json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  const auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

bool number_or_null(const json* j) { return j && (j->is_number() || j->is_null()); }

// A list of n numbers (nulls allowed where a number may be non-finite).
bool number_list(const json* j, size_t n, bool nulls) {
  if (!j || !j->is_array() || j->size() != n) return false;
  return std::all_of(j->begin(), j->end(), [&](const json& e) { return e.is_number() || (nulls && e.is_null()); });
}

// Why a record of numbers is not of the form record_json (parchgrad/evaluation) writes, or ""
// when it is. first: the first such record of the file, whose ratios and fractions every
// record shares (one settings_id, one --ratios and --auc-steps).
std::string eval_record_problem(const json& j, const json* first) {
  const json* ratios = field(j, "ratios");
  if (!ratios || !ratios->is_array() || !number_list(ratios, ratios->size(), false)) return "no list of ratios";
  if (first && *ratios != (*first)["ratios"]) return "other ratios than the file's first record";
  for (const char* order : {"morf", "lerf"}) {
    const json* o = field(j, order);
    if (!o || !o->is_object()) return std::string("no ") + order + " results";
    for (const char* name : {"aopc", "lodds", "acc", "fracdiff", "prob"})
      if (!number_list(field(*o, name), ratios->size(), true))
        return std::string(order) + "." + name + " is not one number per ratio";
    if (!number_or_null(field(*o, "aopc_mean"))) return std::string(order) + ".aopc_mean is not a number";
  }
  for (const char* curve : {"deletion", "insertion"}) {
    const json* c = field(j, curve);
    const json* fr = c ? field(*c, "fractions") : nullptr;
    if (!fr || !fr->is_array() || !number_list(fr, fr->size(), false)) return std::string("no ") + curve + " fractions";
    if (first && *fr != (*first)[curve]["fractions"]) return std::string("other ") + curve + " fractions than the file's first record";
    if (!number_list(field(*c, "prob"), fr->size(), true)) return std::string(curve) + ".prob is not one number per fraction";
    if (!number_or_null(field(*c, "auc"))) return std::string(curve) + ".auc is not a number";
  }
  if (const json* b = field(j, "box")) {
    const json* status = field(*b, "status");
    if (!status || !status->is_string()) return "a box without a status";
    if (*status == "ok") {
      for (const char* k : {"mu_in", "mu_in_w", "mu_out", "mu_out_w"})
        if (!number_or_null(field(*b, k))) return std::string("box.") + k + " is not a number";
      const json* p = field(*b, "pointing");
      if (!p || !p->is_boolean()) return "box.pointing is not true or false";
    }
  }
  return "";
}

}  // namespace

std::vector<json> read_report(const std::string& path, const std::string& settings_id, std::set<std::string>* done,
                              bool* dropped_partial) {
  bool& partial = *dropped_partial;
  std::vector<json> records;
  size_t first = SIZE_MAX;  // index of the first record of numbers
  for (JsonLine& line : read_json_lines(path, "not a report of parchgrad eval?", &partial)) {
    json& j = line.value;
    const int number = line.number;
    auto is_string = [&](const char* key) { return j.contains(key) && j[key].is_string(); };
    auto refuse = [&](const std::string& why) {
      return file_error(path, "line " + std::to_string(number) + " is not a parchgrad eval record" +
                                  (why.empty() ? std::string() : " (" + why + ")"));
    };
    if (!j.is_object() || !is_string("image") || !j.contains("settings_id") || (j.contains("method") && !is_string("method")) ||
        (j.contains("image_path") && !is_string("image_path")) || (j.contains("box_status") && !is_string("box_status")))
      throw refuse("");
    if (j["settings_id"] != settings_id)
      throw file_error(path, "was made with other settings (model, weights, ratios, steps or method settings); "
                             "use another --out or --no-resume to start over");
    const std::string method = j.value("method", std::string("*"));
    if (method == "*" && !j.contains("skipped")) throw refuse("an unreadable image's record without its reason");
    if (!j.contains("skipped")) {
      const std::string why = eval_record_problem(j, first == SIZE_MAX ? nullptr : &records[first]);
      if (!why.empty()) throw refuse(why);
      if (first == SIZE_MAX) first = records.size();
    }
    done->insert(record_key(j, method));
    records.push_back(std::move(j));
  }
  return records;
}

MethodNumbers method_numbers(const std::vector<json>& records, const std::string& method) {
  MethodNumbers m;
  std::vector<const json*> rs;
  for (const auto& l : records) {
    if (l.value("method", std::string("*")) != method) continue;
    if (l.contains("skipped")) ++m.skipped;  // every "*" record (read_report checked)
    else rs.push_back(&l);
  }
  m.images = int64_t(rs.size());
  if (rs.empty()) return m;
  m.ratios = (*rs[0])["ratios"].get<std::vector<double>>();
  auto add = [](std::vector<double>& v, const json& e) {
    if (!e.is_null()) v.push_back(e.get<double>());
  };
  for (const char* order : {"morf", "lerf"}) {
    const std::string o = order;
    for (const char* name : {"aopc", "lodds", "acc", "fracdiff", "prob"}) {
      std::vector<std::vector<double>>& per = m.per_ratio[o + "." + name];
      per.assign(m.ratios.size(), {});
      for (size_t i = 0; i < m.ratios.size(); ++i)
        for (const json* r : rs) add(per[i], (*r)[order][name][i]);
    }
    std::vector<double>& aopc = m.values[o + ".aopc_mean"];
    std::vector<double>& lodds = m.values[o + ".lodds_mean"];
    for (const json* r : rs) {
      add(aopc, (*r)[order]["aopc_mean"]);
      double sum = 0;
      size_t n = 0;
      for (const auto& e : (*r)[order]["lodds"])
        if (!e.is_null()) {
          sum += e.get<double>();
          ++n;
        }
      if (n) lodds.push_back(sum / double(n));
    }
  }
  for (const char* curve : {"deletion", "insertion"}) {
    std::vector<double>& auc = m.values[std::string(curve) + ".auc"];
    for (const json* r : rs) add(auc, (*r)[curve]["auc"]);
    const std::vector<double> fr = (*rs[0])[curve]["fractions"].get<std::vector<double>>();
    // The mean over the records whose probability there is a number (all of them unless one
    // was not finite).
    std::vector<double> count(fr.size(), 0.0), mean(fr.size(), 0.0);
    for (const json* r : rs)
      for (size_t i = 0; i < fr.size(); ++i) count[i] += (*r)[curve]["prob"][i].is_null() ? 0.0 : 1.0;
    for (const json* r : rs)
      for (size_t i = 0; i < fr.size(); ++i) {
        const json& e = (*r)[curve]["prob"][i];
        if (!e.is_null()) mean[i] += e.get<double>() / count[i];
      }
    m.fractions[curve] = fr;
    m.mean_prob[curve] = mean;
  }
  for (const json* r : rs) {
    if (!r->contains("box")) continue;
    const json& b = (*r)["box"];
    if (b["status"] != "ok") {
      ++m.box_invalid;
      continue;
    }
    ++m.box_valid;
    for (const char* k : {"mu_in", "mu_in_w", "mu_out", "mu_out_w"}) add(m.values[std::string("box.") + k], b[k]);
    m.values["box.pointing"].push_back(b["pointing"].get<bool>() ? 1.0 : 0.0);
  }
  return m;
}

// ---- saliency's results.jsonl ---------------------------------------------------------------

std::vector<json> read_results_index(const std::string& path) {
  bool partial = false;
  std::vector<json> records;
  for (auto& [j, number] : read_json_lines(path, "not a saliency record; move the file away or choose another --out", &partial)) {
    if (!j.is_object() || !j.contains("outputs") || !j["outputs"].is_array())
      throw file_error(path, "line " + std::to_string(number) +
                                 " is not a saliency record; move the file away or choose another --out");
    records.push_back(std::move(j));
  }
  return records;
}

std::vector<std::string> files_of(const json& line) {
  std::vector<std::string> files;
  for (const auto& out : line["outputs"])
    for (const char* key : {"map", "overlay", "masks"})
      if (out.contains(key) && out[key].is_string()) files.push_back(out[key].get<std::string>());
  if (line.contains("compare") && line["compare"].is_string()) files.push_back(line["compare"].get<std::string>());
  return files;
}

size_t reindex_results(const std::string& path) { return reindex_results(path, {}, false); }

std::vector<ResultsLine> read_results_lines(const std::string& path, bool keep_text) {
  std::vector<ResultsLine> out;
  std::ifstream f(path, std::ios::binary);
  if (!f) return out;
  const std::string hint = "not a saliency record; move the file away or choose another --out";
  std::string text;
  int number = 0;
  std::streamoff good_end = 0;  // where the last complete line ends
  while (std::getline(f, text)) {
    ++number;
    if (f.eof()) {  // no newline after it: a killed run's partial last line, cut below
      text.clear();
      break;
    }
    good_end = f.tellg();
    if (text.empty()) continue;
    json j = json::parse(text, nullptr, false);
    if (j.is_discarded()) throw file_error(path, "line " + std::to_string(number) + " is not valid JSON (" + hint + ")");
    if (!j.is_object() || !j.contains("outputs") || !j["outputs"].is_array())
      throw file_error(path, "line " + std::to_string(number) + " is " + hint);
    ResultsLine l;
    auto str = [&](const char* key) {
      const auto it = j.find(key);
      return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
    };
    auto num = [&](const char* key) {
      const auto it = j.find(key);
      return it != j.end() && it->is_number_integer() ? it->get<int64_t>() : int64_t(-1);
    };
    l.input = str("input");
    l.settings_id = str("settings_id");
    l.input_hash = str("input_hash");
    l.index = num("index");
    l.target = num("target");
    l.files = files_of(j);
    if (keep_text) l.text = std::move(text);
    out.push_back(std::move(l));
  }
  f.close();
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (!ec && std::uintmax_t(good_end) < size) {
    fs::resize_file(path, std::uintmax_t(good_end), ec);
    if (ec) throw file_error(path, "cannot drop its partial last line (" + ec.message() + ")");
  }
  return out;
}

size_t reindex_results(const std::string& path, const std::vector<int64_t>& rank, bool only_ranked) {
  std::vector<ResultsLine> lines = read_results_lines(path, true);
  std::set<std::string> claimed;
  std::vector<bool> keep(lines.size(), false);
  size_t dropped = 0;
  for (size_t i = lines.size(); i-- > 0;) {
    const std::vector<std::string>& files = lines[i].files;
    keep[i] = std::none_of(files.begin(), files.end(), [&](const std::string& f) { return claimed.count(f) > 0; });
    if (!keep[i]) ++dropped;
    claimed.insert(files.begin(), files.end());
  }
  auto rank_of = [&](size_t i) { return i < rank.size() ? rank[i] : int64_t(-1); };
  std::vector<size_t> ranked;
  std::string text;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (!keep[i]) continue;
    if (rank_of(i) >= 0) ranked.push_back(i);
    else if (!only_ranked) text += lines[i].text + "\n";
  }
  std::stable_sort(ranked.begin(), ranked.end(), [&](size_t a, size_t b) { return rank_of(a) < rank_of(b); });
  for (size_t i : ranked) text += lines[i].text + "\n";
  write_text_atomic(path, text);
  return dropped;
}

}  // namespace pg::cli
