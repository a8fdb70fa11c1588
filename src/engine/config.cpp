#include "combo/engine/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <map>
#include <sstream>

#include "combo/core/check.h"

namespace fs = std::filesystem;

namespace combo::engine {
namespace {

const char* kBaseKey = "_base_";
const char* kCommandLine = "command line";

// One leaf value read from a file or the command line, with where it came from.
struct Entry {
  std::string path;
  YAML::Node value;
  std::string source;
};

template <typename T>
FieldInfo field(const std::string& path, T& value, std::vector<std::string> choices = {}) {
  return FieldInfo{path, FieldRef(&value), std::move(choices)};
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string suggestion(const std::string& path, const std::vector<FieldInfo>& fields) {
  std::string best;
  size_t best_d = 4;  // only suggest close matches
  for (const auto& f : fields) {
    size_t d = edit_distance(path, f.path);
    if (d < best_d) best_d = d, best = f.path;
  }
  return best.empty() ? "" : " (did you mean '" + best + "'?)";
}

bool is_group(const std::string& path, const std::vector<FieldInfo>& fields) {
  const std::string prefix = path + ".";
  return std::any_of(fields.begin(), fields.end(),
                     [&](const FieldInfo& f) { return f.path.rfind(prefix, 0) == 0; });
}

std::string format_double(double v) {
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v);
  std::string s(buf, res.ptr);
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";  // stays a float when re-read
  return s;
}

std::string scalar_text(const YAML::Node& node) {
  if (node.IsScalar()) return node.Scalar();
  std::ostringstream os;
  os << YAML::Dump(node);
  return os.str();
}

template <typename T>
T parse_scalar(const YAML::Node& node, const std::string& path, const std::string& source,
               const char* type) {
  COMBO_CHECK(node.IsScalar(), "config key '", path, "' in ", source, ": expected ", type,
              ", got a ", node.IsSequence() ? "list" : (node.IsMap() ? "mapping" : "null"));
  try {
    return node.as<T>();
  } catch (const YAML::Exception&) {
    COMBO_FAIL("config key '", path, "' in ", source, ": expected ", type, ", got '", node.Scalar(),
               "'");
  }
}

template <typename T>
std::vector<T> parse_list(const YAML::Node& node, const std::string& path,
                          const std::string& source, const char* type) {
  COMBO_CHECK(node.IsSequence() || node.IsNull(), "config key '", path, "' in ", source,
              ": expected a list of ", type, ", got '", scalar_text(node), "'");
  std::vector<T> out;
  if (node.IsNull()) return out;
  for (size_t i = 0; i < node.size(); ++i)
    out.push_back(parse_scalar<T>(node[i], path + "[" + std::to_string(i) + "]", source, type));
  return out;
}

void assign(const FieldInfo& f, const YAML::Node& node, const std::string& source) {
  std::visit(
      [&](auto* p) {
        using T = std::decay_t<decltype(*p)>;
        if constexpr (std::is_same_v<T, bool>) {
          *p = parse_scalar<bool>(node, f.path, source, "a bool");
        } else if constexpr (std::is_same_v<T, int64_t>) {
          *p = parse_scalar<int64_t>(node, f.path, source, "an integer");
        } else if constexpr (std::is_same_v<T, double>) {
          *p = parse_scalar<double>(node, f.path, source, "a number");
        } else if constexpr (std::is_same_v<T, std::string>) {
          *p = node.IsNull() ? std::string()
                             : parse_scalar<std::string>(node, f.path, source, "a string");
        } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
          *p = parse_list<int64_t>(node, f.path, source, "integers");
        } else if constexpr (std::is_same_v<T, std::vector<double>>) {
          *p = parse_list<double>(node, f.path, source, "numbers");
        } else {
          *p = parse_list<std::string>(node, f.path, source, "strings");
        }
      },
      f.ref);
  if (!f.choices.empty()) {
    const std::string& v = *std::get<std::string*>(f.ref);
    if (std::find(f.choices.begin(), f.choices.end(), v) == f.choices.end()) {
      std::string allowed;
      for (const auto& c : f.choices) allowed += (allowed.empty() ? "" : ", ") + c;
      COMBO_FAIL("config key '", f.path, "' in ", source, ": '", v, "' is not one of ", allowed);
    }
  }
}

void apply_entry(const std::vector<FieldInfo>& fields, const Entry& e) {
  for (const auto& f : fields) {
    if (f.path == e.path) {
      assign(f, e.value, e.source);
      return;
    }
  }
  if (is_group(e.path, fields)) {
    COMBO_CHECK(e.value.IsNull(), "config key '", e.path, "' in ", e.source,
                " is a group of keys, not a value");
    return;
  }
  COMBO_FAIL("unknown config key '", e.path, "' in ", e.source, suggestion(e.path, fields));
}

void flatten(const YAML::Node& node, const std::string& prefix, const std::string& source,
             std::vector<Entry>& out) {
  if (node.IsMap()) {
    for (const auto& kv : node) {
      const std::string key = kv.first.as<std::string>();
      flatten(kv.second, prefix.empty() ? key : prefix + "." + key, source, out);
    }
    return;
  }
  out.push_back({prefix, node, source});
}

YAML::Node read_yaml(const fs::path& file) {
  COMBO_CHECK(fs::exists(file), "config file '", file.string(), "' does not exist");
  try {
    return YAML::LoadFile(file.string());
  } catch (const YAML::ParserException& e) {
    COMBO_FAIL("config file '", file.string(), "' is not valid YAML: line ", e.mark.line + 1,
               ", column ", e.mark.column + 1, ": ", e.msg);
  } catch (const YAML::Exception& e) {
    COMBO_FAIL("cannot read config file '", file.string(), "': ", e.what());
  }
}

// Appends the entries of `file` (its bases first) to `out`; `chain` holds the files being read.
void collect(const fs::path& file, std::vector<fs::path>& chain, std::vector<Entry>& out) {
  const fs::path canonical = fs::weakly_canonical(file);
  for (const auto& c : chain) {
    if (c == canonical) {
      std::string cycle;
      for (const auto& x : chain) cycle += x.string() + " -> ";
      COMBO_FAIL("config _base_ cycle: ", cycle, canonical.string());
    }
  }
  YAML::Node root = read_yaml(canonical);
  if (root.IsNull()) return;
  COMBO_CHECK(root.IsMap(), "config file '", canonical.string(),
              "' must hold a mapping of keys at the top level");
  chain.push_back(canonical);
  std::vector<std::string> bases;
  if (const YAML::Node base = root[kBaseKey]; base) {
    if (base.IsScalar()) {
      bases.push_back(base.as<std::string>());
    } else if (base.IsSequence()) {
      for (const auto& b : base) {
        COMBO_CHECK(b.IsScalar(), "config file '", canonical.string(),
                    "': _base_ entries must be file names");
        bases.push_back(b.as<std::string>());
      }
    } else {
      COMBO_FAIL("config file '", canonical.string(),
                 "': _base_ must be a file name or a list of file names");
    }
  }
  for (const auto& b : bases) {
    const fs::path resolved = fs::path(b).is_absolute() ? fs::path(b) : canonical.parent_path() / b;
    COMBO_CHECK(fs::exists(resolved), "config file '", canonical.string(), "': _base_ file '", b,
                "' not found (looked for '", resolved.string(), "')");
    collect(resolved, chain, out);
  }
  for (const auto& kv : root) {
    const std::string key = kv.first.as<std::string>();
    if (key == kBaseKey) continue;
    flatten(kv.second, key, "'" + canonical.string() + "'", out);
  }
  chain.pop_back();
}

YAML::Node field_to_yaml(const FieldRef& ref) {
  return std::visit(
      [](auto* p) -> YAML::Node {
        using T = std::decay_t<decltype(*p)>;
        if constexpr (std::is_same_v<T, double>) {
          return YAML::Node(format_double(*p));
        } else if constexpr (std::is_same_v<T, std::vector<double>>) {
          YAML::Node n(YAML::NodeType::Sequence);
          for (double v : *p) n.push_back(format_double(v));
          return n;
        } else if constexpr (std::is_same_v<T, std::vector<int64_t>> ||
                             std::is_same_v<T, std::vector<std::string>>) {
          YAML::Node n(YAML::NodeType::Sequence);
          for (const auto& v : *p) n.push_back(v);
          return n;
        } else {
          return YAML::Node(*p);
        }
      },
      ref);
}

}  // namespace

std::vector<FieldInfo> config_fields(Config& c) {
  auto& m = c.model;
  auto& l = c.loss;
  auto& d = c.data;
  auto& s = c.solver;
  return {
      field("model.backbone.name", m.backbone.name,
            {"pvt_v2_b0", "pvt_v2_b1", "pvt_v2_b2", "pvt_v2_b3", "pvt_v2_b4", "pvt_v2_b5",
             "resnet50"}),
      field("model.backbone.drop_path_rate", m.backbone.drop_path_rate),
      field("model.backbone.weights", m.backbone.weights),
      field("model.pre_sam.enabled", m.pre_sam.enabled),
      field("model.pre_sam.shared", m.pre_sam.shared),
      field("model.audio.weights", m.audio.weights),
      field("model.audio.freeze", m.audio.freeze),
      field("model.audio.dim", m.audio.dim),
      field("model.audio.init", m.audio.init, {"pytorch", "he"}),
      field("model.audio.cache", m.audio.cache),
      field("model.audio.mlp_dim", m.audio.mlp_dim),
      field("model.pixel_decoder.conv_dim", m.pixel_decoder.conv_dim),
      field("model.pixel_decoder.mask_dim", m.pixel_decoder.mask_dim),
      field("model.pixel_decoder.enc_layers", m.pixel_decoder.enc_layers),
      field("model.pixel_decoder.n_heads", m.pixel_decoder.n_heads),
      field("model.pixel_decoder.n_points", m.pixel_decoder.n_points),
      field("model.pixel_decoder.dim_feedforward", m.pixel_decoder.dim_feedforward),
      field("model.pixel_decoder.dropout", m.pixel_decoder.dropout),
      field("model.fusion.type", m.fusion.type,
            {"bidirectional", "visual_to_audio", "audio_only", "none"}),
      field("model.fusion.placement", m.fusion.placement, {"late", "early"}),
      field("model.fusion.n_heads", m.fusion.n_heads),
      field("model.fusion.dropout", m.fusion.dropout),
      field("model.fusion.layer_scale_init", m.fusion.layer_scale_init),
      field("model.decoder.num_queries", m.decoder.num_queries),
      field("model.decoder.hidden_dim", m.decoder.hidden_dim),
      field("model.decoder.n_heads", m.decoder.n_heads),
      field("model.decoder.dim_feedforward", m.decoder.dim_feedforward),
      field("model.decoder.dec_layers", m.decoder.dec_layers),
      field("model.decoder.pre_norm", m.decoder.pre_norm),
      field("model.decoder.dropout", m.decoder.dropout),
      field("model.decoder.audio_query_layout", m.decoder.audio_query_layout,
            {"official", "per_frame"}),
      field("model.num_classes", m.num_classes),
      field("model.pixel_mean", m.pixel_mean),
      field("model.pixel_std", m.pixel_std),
      field("model.weights", m.weights),
      field("model.activation_checkpointing", m.activation_checkpointing,
            {"auto", "true", "false"}),
      field("loss.class_weight", l.class_weight),
      field("loss.mask_weight", l.mask_weight),
      field("loss.dice_weight", l.dice_weight),
      field("loss.no_object_weight", l.no_object_weight),
      field("loss.deep_supervision", l.deep_supervision),
      field("loss.train_num_points", l.train_num_points),
      field("loss.oversample_ratio", l.oversample_ratio),
      field("loss.importance_sample_ratio", l.importance_sample_ratio),
      field("loss.consistency.type", l.consistency.type, {"adaptive", "fixed", "none"}),
      field("loss.consistency.grouping", l.consistency.grouping, {"official", "per_video"}),
      field("loss.consistency.weight", l.consistency.weight),
      field("data.dataset", d.dataset, {"s4", "ms3", "avss"}),
      field("data.source", d.source, {"files", "synthetic"}),
      field("data.root", d.root),
      field("data.train_split", d.train_split),
      field("data.val_split", d.val_split),
      field("data.test_split", d.test_split),
      field("data.audio_source", d.audio_source, {"wav", "pkl"}),
      field("data.image_size", d.image_size),
      field("data.num_workers", d.num_workers),
      field("data.prefetch", d.prefetch),
      field("data.avss_frames", d.avss_frames, {"auto", "processed", "raw"}),
      field("data.skip_bad", d.skip_bad),
      field("data.check_masks", d.check_masks),
      field("data.silence_audio", d.silence_audio),
      field("data.augment.enabled", d.augment.enabled),
      field("data.augment.short_sides", d.augment.short_sides),
      field("data.augment.max_size", d.augment.max_size),
      field("data.augment.crop_size", d.augment.crop_size),
      field("data.augment.pad_size", d.augment.pad_size),
      field("data.augment.color_jitter", d.augment.color_jitter),
      field("data.augment.jitter_maskige", d.augment.jitter_maskige),
      field("data.augment.flip_prob", d.augment.flip_prob),
      field("data.synthetic.train_videos", d.synthetic.train_videos),
      field("data.synthetic.eval_videos", d.synthetic.eval_videos),
      field("data.synthetic.frames", d.synthetic.frames),
      field("data.synthetic.image_size", d.synthetic.image_size),
      field("data.synthetic.seed", d.synthetic.seed),
      field("data.synthetic.classes", d.synthetic.classes),
      field("data.synthetic.object_scale", d.synthetic.object_scale),
      field("data.synthetic.style", d.synthetic.style, {"textured", "flat"}),
      field("solver.optimizer", s.optimizer, {"adamw"}),
      field("solver.base_lr", s.base_lr),
      field("solver.weight_decay", s.weight_decay),
      field("solver.weight_decay_norm", s.weight_decay_norm),
      field("solver.weight_decay_embed", s.weight_decay_embed),
      field("solver.backbone_multiplier", s.backbone_multiplier),
      field("solver.betas", s.betas),
      field("solver.eps", s.eps),
      field("solver.lr_scheduler", s.lr_scheduler, {"poly", "constant"}),
      field("solver.poly_power", s.poly_power),
      field("solver.warmup_iters", s.warmup_iters),
      field("solver.warmup_factor", s.warmup_factor),
      field("solver.max_iter", s.max_iter),
      field("solver.ims_per_batch", s.ims_per_batch),
      field("solver.checkpoint_period", s.checkpoint_period),
      field("solver.keep_last", s.keep_last),
      field("solver.log_period", s.log_period),
      field("solver.non_finite", s.non_finite, {"stop", "skip"}),
      field("solver.clip_gradients.enabled", s.clip_gradients.enabled),
      field("solver.clip_gradients.type", s.clip_gradients.type, {"full_model", "norm", "value"}),
      field("solver.clip_gradients.value", s.clip_gradients.value),
      field("solver.clip_gradients.norm_type", s.clip_gradients.norm_type),
      field("solver.amp.enabled", s.amp.enabled),
      field("solver.amp.dtype", s.amp.dtype, {"fp16", "bf16"}),
      field("test.eval_period", c.test.eval_period),
      field("test.metric_protocol", c.test.metric_protocol, {"combo", "avsbench"}),
      field("test.batch_size", c.test.batch_size),
      field("runtime.seed", c.runtime.seed),
      field("runtime.threads", c.runtime.threads),
      field("runtime.device", c.runtime.device),
      field("runtime.tf32", c.runtime.tf32, {"default", "on", "off"}),
      field("runtime.dist_backend", c.runtime.dist_backend, {"auto", "gloo", "nccl"}),
      field("runtime.dist_timeout", c.runtime.dist_timeout),
      field("runtime.dist_bucket_mb", c.runtime.dist_bucket_mb),
      field("output_dir", c.output_dir),
  };
}

std::string field_type_name(const FieldRef& ref) {
  return std::visit(
      [](auto* p) -> std::string {
        using T = std::decay_t<decltype(*p)>;
        if constexpr (std::is_same_v<T, bool>) return "bool";
        if constexpr (std::is_same_v<T, int64_t>) return "int";
        if constexpr (std::is_same_v<T, double>) return "float";
        if constexpr (std::is_same_v<T, std::string>) return "string";
        if constexpr (std::is_same_v<T, std::vector<int64_t>>) return "list of int";
        if constexpr (std::is_same_v<T, std::vector<double>>) return "list of float";
        return "list of string";
      },
      ref);
}

void apply_overrides(Config& config, const std::vector<std::string>& overrides) {
  const auto fields = config_fields(config);
  for (const auto& o : overrides) {
    const auto eq = o.find('=');
    COMBO_CHECK(eq != std::string::npos && eq > 0, "override '", o,
                "' on the command line: expected key.path=value");
    const std::string path = o.substr(0, eq);
    const std::string text = o.substr(eq + 1);
    auto it = std::find_if(fields.begin(), fields.end(),
                           [&](const FieldInfo& f) { return f.path == path; });
    COMBO_CHECK(it != fields.end(), "unknown config key '", path, "' in ", kCommandLine,
                suggestion(path, fields));
    YAML::Node value;
    if (std::holds_alternative<std::string*>(it->ref)) {
      value = YAML::Node(text);  // strings are taken verbatim (paths may contain ':' or '#')
    } else {
      const bool is_list = field_type_name(it->ref).rfind("list", 0) == 0;
      const std::string yaml =
          is_list && (text.empty() || text.front() != '[') ? "[" + text + "]" : text;
      try {
        value = YAML::Load(yaml);
      } catch (const YAML::Exception& e) {
        COMBO_FAIL("config key '", path, "' in ", kCommandLine, ": cannot parse '", text,
                   "': ", e.msg);
      }
    }
    assign(*it, value, kCommandLine);
  }
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  Config config;
  if (!path.empty()) {
    std::vector<Entry> entries;
    std::vector<fs::path> chain;
    collect(fs::path(path), chain, entries);
    const auto fields = config_fields(config);
    for (const auto& e : entries) apply_entry(fields, e);
  }
  apply_overrides(config, overrides);
  return config;
}

std::string dump_config(const Config& config) {
  Config copy = config;
  YAML::Node root(YAML::NodeType::Map);
  for (const auto& f : config_fields(copy)) {
    std::vector<std::string> parts;
    std::stringstream ss(f.path);
    for (std::string p; std::getline(ss, p, '.');) parts.push_back(p);
    // yaml-cpp nodes are handles: walk down by reassigning a copy of the handle.
    std::vector<YAML::Node> stack{root};
    for (size_t i = 0; i + 1 < parts.size(); ++i) stack.push_back(stack.back()[parts[i]]);
    stack.back()[parts.back()] = field_to_yaml(f.ref);
  }
  YAML::Emitter out;
  out << root;
  return std::string(out.c_str()) + "\n";
}

bool operator==(const Config& a, const Config& b) {
  Config ca = a, cb = b;
  const auto fa = config_fields(ca);
  const auto fb = config_fields(cb);
  for (size_t i = 0; i < fa.size(); ++i) {
    const bool same = std::visit(
        [&](auto* pa) {
          using P = decltype(pa);
          return *pa == *std::get<P>(fb[i].ref);
        },
        fa[i].ref);
    if (!same) return false;
  }
  return true;
}

}  // namespace combo::engine
