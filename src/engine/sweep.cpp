#include "combo/engine/sweep.h"

#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "combo/core/check.h"
#include "combo/core/state_dict.h"

namespace combo::engine {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t");
  return s.substr(b, e - b + 1);
}

std::pair<std::string, std::string> split_override(const std::string& o) {
  const auto eq = o.find('=');
  COMBO_CHECK(eq != std::string::npos && eq > 0, "sweep: override '", o,
              "' is not of the form key.path=value");
  return {trim(o.substr(0, eq)), trim(o.substr(eq + 1))};
}

std::vector<std::string> split_dots(const std::string& key) {
  std::vector<std::string> parts;
  std::stringstream ss(key);
  std::string p;
  while (std::getline(ss, p, '.')) parts.push_back(p);
  return parts;
}

std::string join_tail(const std::vector<std::string>& parts, size_t n) {
  std::string out;
  for (size_t i = parts.size() - n; i < parts.size(); ++i)
    out += (out.empty() ? "" : ".") + parts[i];
  return out;
}

std::string sanitize(const std::string& s) {
  std::string out;
  for (char c : s) {
    const bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
    out += ok ? c : '-';
  }
  return out;
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::vector<std::string> yaml_string_list(const YAML::Node& node, const std::string& file,
                                          const std::string& key) {
  std::vector<std::string> out;
  if (!node) return out;
  COMBO_CHECK(node.IsSequence(), "'", file, "': '", key, "' must be a list of key=value strings");
  for (const auto& item : node) {
    COMBO_CHECK(item.IsScalar(), "'", file, "': every entry of '", key,
                "' must be a key=value string");
    out.push_back(item.as<std::string>());
  }
  return out;
}

/// A YAML value as the text an override would carry (flow style for lists and maps).
std::string yaml_value_text(const YAML::Node& node) {
  if (node.IsScalar()) return node.as<std::string>();
  YAML::Emitter e;
  e << YAML::Flow << node;
  return e.c_str();
}

/// The value at parts[i..] below `node`, or "" when any part is missing. Recursive: assigning
/// one yaml-cpp Node to another would write into the tree instead of moving down it.
std::string yaml_lookup(const YAML::Node& node, const std::vector<std::string>& parts,
                        size_t i = 0) {
  if (i == parts.size()) return yaml_value_text(node);
  if (!node.IsMap() || !node[parts[i]]) return "";
  return yaml_lookup(node[parts[i]], parts, i + 1);
}

/// The value at a dotted key in a YAML file, or "" when any part is missing.
std::string yaml_lookup(const YAML::Node& root, const std::string& key) {
  return yaml_lookup(root, split_dots(key));
}

std::string csv_cell(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string number(double v, int digits = 4) {
  if (!std::isfinite(v)) return "";
  std::ostringstream os;
  os.setf(std::ios::fixed);
  os.precision(digits);
  os << v;
  return os.str();
}

}  // namespace

std::pair<std::string, std::vector<std::string>> parse_grid_axis(const std::string& axis) {
  const auto [key, rest] = split_override(axis);
  std::vector<std::string> values;
  std::string cur;
  int depth = 0;
  for (char c : rest) {
    if (c == '[') ++depth;
    if (c == ']') --depth;
    if (c == ',' && depth == 0) {
      values.push_back(trim(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  values.push_back(trim(cur));
  for (const auto& v : values)
    COMBO_CHECK(!v.empty(), "sweep: grid axis '", axis, "' has an empty value");
  return {key, values};
}

std::string run_name(const std::vector<std::string>& overrides,
                     const std::vector<std::string>& all_keys) {
  if (overrides.empty()) return "base";
  std::string name;
  for (const auto& o : overrides) {
    const auto [key, value] = split_override(o);
    const auto parts = split_dots(key);
    std::string shown = key;
    for (size_t n = 1; n <= parts.size(); ++n) {
      const std::string tail = join_tail(parts, n);
      bool unique = true;
      for (const auto& other : all_keys) {
        if (other == key) continue;
        const auto op = split_dots(other);
        if (op.size() >= n && join_tail(op, n) == tail) unique = false;
      }
      if (unique) {
        shown = tail;
        break;
      }
    }
    name += (name.empty() ? "" : "_") + sanitize(shown + "-" + value);
  }
  return name;
}

std::vector<SweepRun> expand_grid(const std::vector<std::string>& axes) {
  std::vector<std::pair<std::string, std::vector<std::string>>> parsed;
  std::vector<std::string> keys;
  for (const auto& a : axes) {
    auto p = parse_grid_axis(a);
    COMBO_CHECK(std::find(keys.begin(), keys.end(), p.first) == keys.end(), "sweep: key '", p.first,
                "' appears in two grid axes");
    keys.push_back(p.first);
    parsed.push_back(std::move(p));
  }
  std::vector<std::vector<std::string>> combos{{}};
  for (const auto& [key, values] : parsed) {
    std::vector<std::vector<std::string>> next;
    for (const auto& c : combos)
      for (const auto& v : values) {
        auto n = c;
        n.push_back(key + "=" + v);
        next.push_back(std::move(n));
      }
    combos = std::move(next);
  }
  std::vector<SweepRun> runs;
  std::set<std::string> names;
  for (auto& c : combos) {
    SweepRun r{run_name(c, keys), c};
    COMBO_CHECK(names.insert(r.name).second, "sweep: two grid runs would share the folder '",
                r.name, "'");
    runs.push_back(std::move(r));
  }
  return runs;
}

SweepSpec read_sweep_file(const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const std::exception& e) {
    COMBO_FAIL("cannot read sweep file '", path, "': ", e.what());
  }
  COMBO_CHECK(root.IsMap(), "'", path, "': a sweep file is a map with base, overrides, grid, runs");
  for (const auto& kv : root) {
    const auto k = kv.first.as<std::string>();
    COMBO_CHECK(k == "base" || k == "overrides" || k == "grid" || k == "runs", "'", path,
                "': unknown key '", k, "' (known: base, overrides, grid, runs)");
  }
  SweepSpec spec;
  if (root["base"]) {
    const auto base = root["base"].as<std::string>();
    fs::path p(base);
    if (p.is_relative() && !fs::exists(p)) p = fs::path(path).parent_path() / base;
    spec.base_config = p.string();
  }
  spec.common = yaml_string_list(root["overrides"], path, "overrides");
  if (const auto grid = root["grid"]) {
    COMBO_CHECK(grid.IsMap(), "'", path, "': 'grid' must map keys to lists of values");
    std::vector<std::string> axes;
    for (const auto& kv : grid) {
      const auto key = kv.first.as<std::string>();
      COMBO_CHECK(kv.second.IsSequence() && kv.second.size() > 0, "'", path, "': grid key '", key,
                  "' must have a non-empty list of values");
      std::string axis = key + "=";
      for (size_t i = 0; i < kv.second.size(); ++i)
        axis += (i ? "," : "") + yaml_value_text(kv.second[i]);
      axes.push_back(axis);
    }
    spec.runs = expand_grid(axes);
  }
  if (const auto runs = root["runs"]) {
    COMBO_CHECK(runs.IsSequence(), "'", path, "': 'runs' must be a list");
    size_t i = 0;
    for (const auto& r : runs) {
      COMBO_CHECK(r.IsMap() && r["name"], "'", path, "': runs[", i, "] needs a 'name'");
      SweepRun run;
      run.name = r["name"].as<std::string>();
      run.overrides =
          yaml_string_list(r["overrides"], path, "runs[" + std::to_string(i) + "].overrides");
      spec.runs.push_back(std::move(run));
      ++i;
    }
  }
  try {
    validate_sweep(spec);
  } catch (const Error& e) {
    throw Error(str_cat("'", path, "': ", e.what()));
  }
  return spec;
}

void validate_sweep(const SweepSpec& spec) {
  COMBO_CHECK(!spec.runs.empty(), "sweep: no run (give --grid, --run or a sweep file)");
  std::set<std::string> names;
  for (const auto& r : spec.runs) {
    COMBO_CHECK(!r.name.empty() && r.name != "." && r.name != ".." && sanitize(r.name) == r.name,
                "sweep: run name '", r.name, "' is not a plain folder name ([A-Za-z0-9._-])");
    COMBO_CHECK(names.insert(r.name).second, "sweep: two runs are named '", r.name, "'");
    for (const auto& o : r.overrides) split_override(o);
  }
  for (const auto& o : spec.common) split_override(o);
}

const char* run_state_name(RunState s) {
  switch (s) {
    case RunState::kPending:
      return "pending";
    case RunState::kRunning:
      return "running";
    case RunState::kInterrupted:
      return "interrupted";
    case RunState::kFailed:
      return "failed";
    case RunState::kDone:
      return "done";
  }
  return "?";
}

RunStatus read_run_status(const std::string& run_dir) {
  RunStatus s;
  const fs::path p = fs::path(run_dir) / "status.json";
  if (!fs::exists(p)) return s;
  json j;
  try {
    j = json::parse(read_text(p));
  } catch (const std::exception& e) {
    COMBO_FAIL("'", p.string(), "': not JSON (", e.what(), ")");
  }
  const std::string state = j.value("state", "pending");
  bool known = false;
  for (auto st : {RunState::kPending, RunState::kRunning, RunState::kInterrupted, RunState::kFailed,
                  RunState::kDone})
    if (state == run_state_name(st)) {
      s.state = st;
      known = true;
    }
  COMBO_CHECK(known, "'", p.string(), "': unknown state '", state, "'");
  s.stage = j.value("stage", "");
  s.exit_code = j.value("exit_code", 0);
  s.message = j.value("message", "");
  s.seconds = j.value("seconds", 0.0);
  return s;
}

void write_run_status(const std::string& run_dir, const RunStatus& s) {
  json j{{"state", run_state_name(s.state)}, {"seconds", s.seconds}};
  if (!s.stage.empty()) j["stage"] = s.stage;
  if (s.exit_code != 0) j["exit_code"] = s.exit_code;
  if (!s.message.empty()) j["message"] = s.message;
  write_file_atomic((fs::path(run_dir) / "status.json").string(), j.dump(2) + "\n");
}

SweepTable collect_sweep(const std::string& sweep_dir) {
  COMBO_CHECK(fs::is_directory(sweep_dir), "sweep folder '", sweep_dir, "' does not exist");
  std::vector<std::string> order;
  const fs::path manifest = fs::path(sweep_dir) / "sweep.json";
  if (fs::exists(manifest)) {
    try {
      const auto j = json::parse(read_text(manifest));
      for (const auto& r : j.at("runs")) order.push_back(r.at("name").get<std::string>());
    } catch (const std::exception& e) {
      COMBO_FAIL("'", manifest.string(), "': ", e.what());
    }
  }
  std::vector<std::string> extra;
  for (const auto& entry : fs::directory_iterator(sweep_dir)) {
    if (!entry.is_directory() || !fs::exists(entry.path() / "run.json")) continue;
    const auto name = entry.path().filename().string();
    if (std::find(order.begin(), order.end(), name) == order.end()) extra.push_back(name);
  }
  std::sort(extra.begin(), extra.end());
  order.insert(order.end(), extra.begin(), extra.end());

  SweepTable table;
  std::set<std::string> key_set, metric_set;
  std::vector<YAML::Node> configs;  // per row, for the keys other runs override
  for (const auto& name : order) {
    const fs::path dir = fs::path(sweep_dir) / name;
    SweepRow row;
    row.run = name;
    if (!fs::exists(dir / "run.json")) {
      row.state = "missing";
      table.rows.push_back(std::move(row));
      configs.emplace_back();
      continue;
    }
    json run;
    try {
      run = json::parse(read_text(dir / "run.json"));
    } catch (const std::exception& e) {
      COMBO_FAIL("'", (dir / "run.json").string(), "': not JSON (", e.what(), ")");
    }
    const auto status = read_run_status(dir.string());
    row.state = run_state_name(status.state);
    row.seconds = status.seconds;
    YAML::Node cfg;
    if (fs::exists(dir / "config.yaml")) {
      try {
        cfg = YAML::LoadFile((dir / "config.yaml").string());
      } catch (const std::exception& e) {
        COMBO_FAIL("'", (dir / "config.yaml").string(), "': ", e.what());
      }
    }
    for (const auto& o : run.value("overrides", std::vector<std::string>{})) {
      const auto [key, value] = split_override(o);
      const std::string effective = cfg ? yaml_lookup(cfg, key) : "";
      row.keys[key] = effective.empty() ? value : effective;
      key_set.insert(key);
    }
    const std::string eval_dir = run.value("eval_dir", "eval_test");
    const fs::path metrics = dir / eval_dir / "metrics.json";
    if (fs::exists(metrics)) {
      try {
        const auto m = json::parse(read_text(metrics));
        row.split = m.value("split", "");
        row.protocol = m.value("protocol", "");
        row.partial = m.value("partial", false);
        for (const auto& [k, v] : m.at("metrics").items()) {
          if (k.rfind("num_", 0) == 0) continue;  // counts (videos, batches), not scores
          row.metrics[k] = v.get<double>();
          metric_set.insert(k);
        }
      } catch (const std::exception& e) {
        COMBO_FAIL("'", metrics.string(), "': ", e.what());
      }
    }
    const fs::path jsonl = dir / "metrics.jsonl";
    if (fs::exists(jsonl)) {
      std::ifstream in(jsonl);
      std::string line;
      while (std::getline(in, line)) {
        if (trim(line).empty()) continue;
        try {
          const auto r = json::parse(line);
          if (r.contains("iteration"))
            row.iterations = std::max<int64_t>(row.iterations, r["iteration"].get<int64_t>() + 1);
          if (r.contains("mIoU") && r["mIoU"].is_number())
            row.best_val_miou = std::max(row.best_val_miou, r["mIoU"].get<double>());
        } catch (const std::exception&) {
          // A line cut by a crash is not a reason to lose the table: skip it.
        }
      }
    }
    table.rows.push_back(std::move(row));
    configs.push_back(cfg);
  }
  table.key_columns.assign(key_set.begin(), key_set.end());
  // A key another run overrides: this run's value from its own merged config.
  for (size_t i = 0; i < table.rows.size(); ++i) {
    for (const auto& k : table.key_columns) {
      if (table.rows[i].keys.count(k) || !configs[i]) continue;
      const auto v = yaml_lookup(configs[i], k);
      if (!v.empty()) table.rows[i].keys[k] = v;
    }
  }
  table.metric_columns.assign(metric_set.begin(), metric_set.end());
  write_file_atomic((fs::path(sweep_dir) / "results.csv").string(), sweep_csv(table));
  write_file_atomic((fs::path(sweep_dir) / "results.md").string(), sweep_markdown(table));
  return table;
}

namespace {

std::vector<std::string> header(const SweepTable& t) {
  std::vector<std::string> h{"run", "state"};
  h.insert(h.end(), t.key_columns.begin(), t.key_columns.end());
  h.push_back("split");
  h.push_back("protocol");
  h.insert(h.end(), t.metric_columns.begin(), t.metric_columns.end());
  h.push_back("best_val_mIoU");
  h.push_back("iterations");
  h.push_back("seconds");
  return h;
}

std::vector<std::string> cells(const SweepTable& t, const SweepRow& r) {
  std::vector<std::string> c{r.run, r.state + (r.partial ? " (partial eval)" : "")};
  for (const auto& k : t.key_columns) {
    auto it = r.keys.find(k);
    c.push_back(it == r.keys.end() ? "" : it->second);
  }
  c.push_back(r.split);
  c.push_back(r.protocol);
  for (const auto& m : t.metric_columns) {
    auto it = r.metrics.find(m);
    c.push_back(it == r.metrics.end() ? "" : number(it->second));
  }
  c.push_back(r.best_val_miou >= 0 ? number(r.best_val_miou) : "");
  c.push_back(r.iterations > 0 ? std::to_string(r.iterations) : "");
  c.push_back(r.seconds > 0 ? number(r.seconds, 0) : "");
  return c;
}

}  // namespace

std::string sweep_csv(const SweepTable& table) {
  std::string out;
  auto line = [&](const std::vector<std::string>& v) {
    for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + csv_cell(v[i]);
    out += "\n";
  };
  line(header(table));
  for (const auto& r : table.rows) line(cells(table, r));
  return out;
}

std::string sweep_markdown(const SweepTable& table) {
  std::string out;
  auto line = [&](const std::vector<std::string>& v) {
    out += "|";
    for (const auto& c : v) {
      std::string e;
      for (char ch : c) e += ch == '|' ? std::string("\\|") : std::string(1, ch);
      out += " " + e + " |";
    }
    out += "\n";
  };
  const auto h = header(table);
  line(h);
  out += "|";
  for (size_t i = 0; i < h.size(); ++i) out += "---|";
  out += "\n";
  for (const auto& r : table.rows) line(cells(table, r));
  return out;
}

}  // namespace combo::engine
