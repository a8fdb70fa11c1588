#include "combo/io/pkl_reader.h"

#include <torch/serialize.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "combo/core/check.h"

namespace combo::io {
namespace {

// ---------------------------------------------------------------------------------------------
// A pickle interpreter that builds a tree of plain values instead of calling anything: globals
// stay names, REDUCE/NEWOBJ become "call" nodes, persistent ids stay ids. The caller interprets
// the few calls a pickled tensor consists of.

enum class Kind {
  kNone,
  kBool,
  kInt,
  kBigInt,  // a LONG that does not fit int64: raw little-endian two's complement bytes in `s`
  kFloat,
  kStr,
  kBytes,
  kTuple,
  kList,
  kDict,        // items = k0, v0, k1, v1, ...
  kGlobal,      // s = "module.name"
  kCall,        // items = {callable, args tuple}; `state` set by BUILD
  kPersistent,  // items = {pid}
  kMark,
};

struct Obj;
using ObjPtr = std::shared_ptr<Obj>;

struct Obj {
  Kind kind = Kind::kNone;
  int64_t i = 0;
  double f = 0.0;
  std::string s;
  std::vector<ObjPtr> items;
  ObjPtr state;
};

ObjPtr make(Kind kind) {
  auto o = std::make_shared<Obj>();
  o->kind = kind;
  return o;
}
ObjPtr make_int(int64_t v) {
  auto o = make(Kind::kInt);
  o->i = v;
  return o;
}
ObjPtr make_str(Kind kind, std::string v) {
  auto o = make(kind);
  o->s = std::move(v);
  return o;
}

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
      return "int";
    case Kind::kBigInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kStr:
      return "str";
    case Kind::kBytes:
      return "bytes";
    case Kind::kTuple:
      return "tuple";
    case Kind::kList:
      return "list";
    case Kind::kDict:
      return "dict";
    case Kind::kGlobal:
      return "global";
    case Kind::kCall:
      return "call";
    case Kind::kPersistent:
      return "persistent id";
    case Kind::kMark:
      return "mark";
  }
  return "?";
}

std::string describe(const ObjPtr& o) {
  if (o->kind == Kind::kGlobal) return o->s;
  if (o->kind == Kind::kCall && o->items[0]->kind == Kind::kGlobal) {
    return o->items[0]->s + "(...)";
  }
  return kind_name(o->kind);
}

// Python 3 pickles bytes at protocol 2 as _codecs.encode(<str>, 'latin1'): the str is UTF-8 in
// the stream and every code point is one byte.
std::string utf8_to_latin1(const std::string& in, const std::string& name) {
  std::string out;
  out.reserve(in.size());
  for (size_t k = 0; k < in.size(); ++k) {
    const auto c = static_cast<unsigned char>(in[k]);
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else if ((c & 0xE0) == 0xC0 && k + 1 < in.size()) {
      const unsigned cp = ((c & 0x1Fu) << 6) | (static_cast<unsigned char>(in[++k]) & 0x3Fu);
      COMBO_CHECK(cp < 256, "cannot read '", name, "': a latin1-encoded bytes object holds U+", cp);
      out.push_back(static_cast<char>(cp));
    } else {
      COMBO_FAIL("cannot read '", name, "': a latin1-encoded bytes object is not valid latin1");
    }
  }
  return out;
}

class Unpickler {
 public:
  Unpickler(const std::string& data, size_t pos, std::string name)
      : data_(data), pos_(pos), name_(std::move(name)) {}

  size_t pos() const { return pos_; }

  ObjPtr load() {
    stack_.clear();
    memo_.clear();
    while (true) {
      const size_t at = pos_;
      const uint8_t op = u8();
      switch (op) {
        case 0x80: {  // PROTO
          const uint8_t proto = u8();
          check(proto <= 5, at, "pickle protocol ", int(proto), " is newer than 5");
          break;
        }
        case 0x95:
          skip(8);
          break;     // FRAME: framing is transparent
        case '.': {  // STOP
          check(stack_.size() == 1, at, "the pickle ends with ", stack_.size(),
                " values on the stack, expected 1");
          return stack_.back();
        }
        case '(':
          stack_.push_back(make(Kind::kMark));
          break;
        case '0':
          pop(at);
          break;  // POP
        case '1':
          pop_mark(at);
          break;  // POP_MARK
        case '2':
          stack_.push_back(top(at));
          break;  // DUP
        case 'N':
          stack_.push_back(make(Kind::kNone));
          break;
        case 0x88:
        case 0x89: {  // NEWTRUE / NEWFALSE
          auto b = make(Kind::kBool);
          b->i = op == 0x88;
          stack_.push_back(b);
          break;
        }
        case 'J':
          stack_.push_back(make_int(static_cast<int32_t>(le(4))));
          break;  // BININT
        case 'K':
          stack_.push_back(make_int(u8()));
          break;  // BININT1
        case 'M':
          stack_.push_back(make_int(static_cast<int64_t>(le(2))));
          break;  // BININT2
        case 0x8a:
          push_long(take(u8()));
          break;  // LONG1
        case 0x8b:
          push_long(take(length(4, at)));
          break;     // LONG4
        case 'I': {  // INT (text)
          const std::string l = line(at);
          if (l == "00" || l == "01") {
            auto b = make(Kind::kBool);
            b->i = l == "01";
            stack_.push_back(b);
          } else {
            stack_.push_back(make_int(parse_int(l, at)));
          }
          break;
        }
        case 'L': {  // LONG (text)
          std::string l = line(at);
          if (!l.empty() && l.back() == 'L') l.pop_back();
          stack_.push_back(make_int(parse_int(l, at)));
          break;
        }
        case 'G': {  // BINFLOAT, big-endian
          uint64_t bits = 0;
          for (int k = 0; k < 8; ++k) bits = (bits << 8) | u8();
          auto f = make(Kind::kFloat);
          std::memcpy(&f->f, &bits, sizeof(double));
          stack_.push_back(f);
          break;
        }
        case 'F': {  // FLOAT (text)
          auto f = make(Kind::kFloat);
          f->f = std::strtod(line(at).c_str(), nullptr);
          stack_.push_back(f);
          break;
        }
        case 'X':
          stack_.push_back(make_str(Kind::kStr, take(length(4, at))));
          break;
        case 0x8c:
          stack_.push_back(make_str(Kind::kStr, take(u8())));
          break;
        case 0x8d:
          stack_.push_back(make_str(Kind::kStr, take(length(8, at))));
          break;
        // Python 2 str: what it means depends on the writer; keep the raw bytes.
        case 'T':
          stack_.push_back(make_str(Kind::kStr, take(length(4, at))));
          break;
        case 'U':
          stack_.push_back(make_str(Kind::kStr, take(u8())));
          break;
        case 'B':
          stack_.push_back(make_str(Kind::kBytes, take(length(4, at))));
          break;
        case 'C':
          stack_.push_back(make_str(Kind::kBytes, take(u8())));
          break;
        case 0x8e:  // BINBYTES8
        case 0x96:  // BYTEARRAY8
          stack_.push_back(make_str(Kind::kBytes, take(length(8, at))));
          break;
        case ')':
          stack_.push_back(make(Kind::kTuple));
          break;
        case 't': {
          auto t = make(Kind::kTuple);
          t->items = pop_mark(at);
          stack_.push_back(t);
          break;
        }
        case 0x85:
        case 0x86:
        case 0x87: {  // TUPLE1..3
          const size_t n = op - 0x84;
          check(stack_.size() >= n, at, "TUPLE", n, " on a stack of ", stack_.size());
          auto t = make(Kind::kTuple);
          t->items.assign(stack_.end() - static_cast<std::ptrdiff_t>(n), stack_.end());
          stack_.resize(stack_.size() - n);
          stack_.push_back(t);
          break;
        }
        case ']':
          stack_.push_back(make(Kind::kList));
          break;
        case 'l': {
          auto l = make(Kind::kList);
          l->items = pop_mark(at);
          stack_.push_back(l);
          break;
        }
        case 'a': {  // APPEND
          ObjPtr v = pop(at);
          ObjPtr l = top(at);
          check(l->kind == Kind::kList, at, "APPEND to a ", describe(l));
          l->items.push_back(v);
          break;
        }
        case 'e': {  // APPENDS
          std::vector<ObjPtr> vs = pop_mark(at);
          ObjPtr l = top(at);
          check(l->kind == Kind::kList, at, "APPENDS to a ", describe(l));
          l->items.insert(l->items.end(), vs.begin(), vs.end());
          break;
        }
        case '}':
          stack_.push_back(make(Kind::kDict));
          break;
        case 'd': {
          auto d = make(Kind::kDict);
          d->items = pop_mark(at);
          check(d->items.size() % 2 == 0, at, "DICT with an odd number of items");
          stack_.push_back(d);
          break;
        }
        case 's': {  // SETITEM
          ObjPtr v = pop(at);
          ObjPtr k = pop(at);
          ObjPtr d = top(at);
          check(d->kind == Kind::kDict, at, "SETITEM on a ", describe(d));
          d->items.push_back(k);
          d->items.push_back(v);
          break;
        }
        case 'u': {  // SETITEMS
          std::vector<ObjPtr> kv = pop_mark(at);
          ObjPtr d = top(at);
          check(d->kind == Kind::kDict && kv.size() % 2 == 0, at, "SETITEMS on a ", describe(d));
          d->items.insert(d->items.end(), kv.begin(), kv.end());
          break;
        }
        case 'c': {  // GLOBAL "module\nname\n"
          std::string module = line(at);
          std::string qualname = line(at);
          stack_.push_back(make_str(Kind::kGlobal, module + "." + qualname));
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          ObjPtr qualname = pop(at);
          ObjPtr module = pop(at);
          check(module->kind == Kind::kStr && qualname->kind == Kind::kStr, at,
                "STACK_GLOBAL expects two strings");
          stack_.push_back(make_str(Kind::kGlobal, module->s + "." + qualname->s));
          break;
        }
        case 'R':     // REDUCE
        case 0x81: {  // NEWOBJ
          ObjPtr args = pop(at);
          ObjPtr callable = pop(at);
          stack_.push_back(reduce(callable, args, at));
          break;
        }
        case 0x92: {  // NEWOBJ_EX
          pop(at);    // kwargs
          ObjPtr args = pop(at);
          ObjPtr callable = pop(at);
          stack_.push_back(reduce(callable, args, at));
          break;
        }
        case 'b': {  // BUILD
          ObjPtr state = pop(at);
          top(at)->state = state;
          break;
        }
        case 'Q': {  // BINPERSID
          auto p = make(Kind::kPersistent);
          p->items.push_back(pop(at));
          stack_.push_back(p);
          break;
        }
        case 'P': {  // PERSID
          auto p = make(Kind::kPersistent);
          p->items.push_back(make_str(Kind::kStr, line(at)));
          stack_.push_back(p);
          break;
        }
        case 0x94: {  // MEMOIZE
          const uint64_t index = memo_.size();
          memo_[index] = top(at);
          break;
        }
        case 'q':
          memo_[u8()] = top(at);
          break;  // BINPUT
        case 'r':
          memo_[le(4)] = top(at);
          break;  // LONG_BINPUT
        case 'p':
          memo_[parse_index(line(at), at)] = top(at);
          break;  // PUT
        case 'h':
          stack_.push_back(memo_get(u8(), at));
          break;  // BINGET
        case 'j':
          stack_.push_back(memo_get(le(4), at));
          break;  // LONG_BINGET
        case 'g':
          stack_.push_back(memo_get(parse_index(line(at), at), at));
          break;  // GET
        default:
          fail(at, "unsupported pickle opcode 0x", hex(op),
               " (is this a Python pickle of a tensor?)");
      }
    }
  }

 private:
  template <typename... Args>
  [[noreturn]] void fail(size_t at, Args&&... parts) const {
    COMBO_FAIL("cannot read '", name_, "': ", std::forward<Args>(parts)..., " (pickle byte ", at,
               ")");
  }
  template <typename... Args>
  void check(bool cond, size_t at, Args&&... parts) const {
    if (!cond) fail(at, std::forward<Args>(parts)...);
  }
  static std::string hex(uint8_t v) {
    const char* digits = "0123456789abcdef";
    return {digits[v >> 4], digits[v & 15]};
  }

  void need(size_t n) const {
    if (n > data_.size() - pos_) {
      fail(pos_, "the file is truncated (needs ", n, " more bytes, has ", data_.size() - pos_, ")");
    }
  }
  uint8_t u8() {
    need(1);
    return static_cast<uint8_t>(data_[pos_++]);
  }
  uint64_t le(int bytes) {
    need(static_cast<size_t>(bytes));
    uint64_t v = 0;
    for (int k = bytes - 1; k >= 0; --k) {
      v = (v << 8) | static_cast<uint8_t>(data_[pos_ + static_cast<size_t>(k)]);
    }
    pos_ += static_cast<size_t>(bytes);
    return v;
  }
  size_t length(int bytes, size_t at) {
    const uint64_t n = le(bytes);
    check(n <= data_.size(), at, "a length of ", n, " bytes exceeds the file");
    return static_cast<size_t>(n);
  }
  void skip(size_t n) {
    need(n);
    pos_ += n;
  }
  std::string take(size_t n) {
    need(n);
    std::string s = data_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  std::string line(size_t at) {
    const size_t end = data_.find('\n', pos_);
    check(end != std::string::npos, at, "unterminated text argument");
    std::string s = data_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return s;
  }
  int64_t parse_int(const std::string& s, size_t at) const {
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(s.c_str(), &end, 10);
    check(errno == 0 && end && *end == '\0' && !s.empty(), at, "bad integer '", s, "'");
    return v;
  }
  uint64_t parse_index(const std::string& s, size_t at) const {
    const int64_t v = parse_int(s, at);
    check(v >= 0, at, "negative memo index");
    return static_cast<uint64_t>(v);
  }
  void push_long(const std::string& bytes) {
    if (bytes.size() <= 8) {
      // Little-endian two's complement, sign-extended.
      uint64_t v = 0;
      for (size_t k = bytes.size(); k-- > 0;) v = (v << 8) | static_cast<uint8_t>(bytes[k]);
      if (!bytes.empty() && bytes.size() < 8 && (static_cast<uint8_t>(bytes.back()) & 0x80)) {
        v |= ~uint64_t{0} << (8 * bytes.size());
      }
      stack_.push_back(make_int(static_cast<int64_t>(v)));
    } else {
      stack_.push_back(make_str(Kind::kBigInt, bytes));
    }
  }
  ObjPtr pop(size_t at) {
    check(!stack_.empty() && stack_.back()->kind != Kind::kMark, at, "stack underflow");
    ObjPtr v = stack_.back();
    stack_.pop_back();
    return v;
  }
  ObjPtr top(size_t at) const {
    check(!stack_.empty() && stack_.back()->kind != Kind::kMark, at, "stack underflow");
    return stack_.back();
  }
  std::vector<ObjPtr> pop_mark(size_t at) {
    size_t k = stack_.size();
    while (k > 0 && stack_[k - 1]->kind != Kind::kMark) --k;
    check(k > 0, at, "no MARK on the stack");
    std::vector<ObjPtr> items(stack_.begin() + static_cast<std::ptrdiff_t>(k), stack_.end());
    stack_.resize(k - 1);
    return items;
  }
  ObjPtr memo_get(uint64_t index, size_t at) const {
    auto it = memo_.find(index);
    check(it != memo_.end(), at, "memo entry ", index, " is not defined");
    return it->second;
  }
  ObjPtr reduce(const ObjPtr& callable, const ObjPtr& args, size_t at) {
    check(args->kind == Kind::kTuple, at, "REDUCE arguments are a ", describe(args),
          ", expected a tuple");
    if (callable->kind == Kind::kGlobal) {
      // Two calls that only rebuild plain values are evaluated here.
      if (callable->s == "collections.OrderedDict" && args->items.empty()) {
        return make(Kind::kDict);
      }
      if (callable->s == "_codecs.encode" && args->items.size() == 2 &&
          args->items[0]->kind == Kind::kStr) {
        return make_str(Kind::kBytes, utf8_to_latin1(args->items[0]->s, name_));
      }
    }
    auto call = make(Kind::kCall);
    call->items = {callable, args};
    return call;
  }

  const std::string& data_;
  size_t pos_;
  std::string name_;
  std::vector<ObjPtr> stack_;
  std::unordered_map<uint64_t, ObjPtr> memo_;
};

// ---------------------------------------------------------------------------------------------
// Interpreting the tree.

bool is_call_to(const ObjPtr& o, const std::string& suffix) {
  if (o->kind != Kind::kCall || o->items[0]->kind != Kind::kGlobal) return false;
  const std::string& n = o->items[0]->s;
  return n.size() >= suffix.size() &&
         n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0;
}

const std::vector<ObjPtr>& call_args(const ObjPtr& call) { return call->items[1]->items; }

// The magic number every legacy torch.save stream starts with (LONG1 little-endian bytes of
// 0x1950a86a20f9469cfc6c).
const std::string kLegacyMagic("\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", 10);
constexpr int64_t kLegacyProtocolVersion = 1001;

struct StorageType {
  at::ScalarType dtype;
  int64_t element_size;
};

bool storage_type(const std::string& global, StorageType* out) {
  static const std::map<std::string, StorageType> kTypes = {
      {"torch.FloatStorage", {at::kFloat, 4}}, {"torch.DoubleStorage", {at::kDouble, 8}},
      {"torch.HalfStorage", {at::kHalf, 2}},   {"torch.BFloat16Storage", {at::kBFloat16, 2}},
      {"torch.LongStorage", {at::kLong, 8}},   {"torch.IntStorage", {at::kInt, 4}},
      {"torch.ShortStorage", {at::kShort, 2}}, {"torch.CharStorage", {at::kChar, 1}},
      {"torch.ByteStorage", {at::kByte, 1}},   {"torch.BoolStorage", {at::kBool, 1}},
  };
  auto it = kTypes.find(global);
  if (it == kTypes.end()) return false;
  *out = it->second;
  return true;
}

bool host_is_little_endian() {
  const uint16_t probe = 1;
  uint8_t first = 0;
  std::memcpy(&first, &probe, 1);
  return first == 1;
}

class Interpreter {
 public:
  explicit Interpreter(std::string name) : name_(std::move(name)) {}

  struct Result {
    at::Tensor tensor;
    bool has_shape = true;  // false when the root is a bare storage
  };

  Result interpret_root(const ObjPtr& root) {
    if (auto t = as_tensor(root)) return {*t, true};
    if (auto s = as_storage(root)) return {*s, false};
    COMBO_FAIL("cannot read '", name_, "': expected a pickled torch.Tensor, found ",
               describe(root));
  }

  // A legacy torch.save stream: magic, protocol, sys_info, the object, storage keys, storages.
  // Returns the object with persistent ids resolvable through `storages_`.
  ObjPtr load_legacy(const std::string& data) {
    Unpickler u(data, 0, name_);
    const ObjPtr magic = u.load();
    COMBO_CHECK(magic->kind == Kind::kBigInt && magic->s == kLegacyMagic, "cannot read '", name_,
                "': a torch.save byte stream with a wrong magic number (corrupt file?)");
    Unpickler u2(data, u.pos(), name_);
    const ObjPtr protocol = u2.load();
    COMBO_CHECK(protocol->kind == Kind::kInt && protocol->i == kLegacyProtocolVersion,
                "cannot read '", name_, "': torch.save protocol ",
                protocol->kind == Kind::kInt ? std::to_string(protocol->i) : describe(protocol),
                ", expected ", kLegacyProtocolVersion);
    Unpickler u3(data, u2.pos(), name_);
    const ObjPtr sys_info = u3.load();
    if (sys_info->kind == Kind::kDict) {
      for (size_t k = 0; k + 1 < sys_info->items.size(); k += 2) {
        const ObjPtr& key = sys_info->items[k];
        const ObjPtr& value = sys_info->items[k + 1];
        if (key->kind == Kind::kStr && key->s == "little_endian") {
          COMBO_CHECK(value->kind == Kind::kBool && value->i == 1, "cannot read '", name_,
                      "': the tensor data was written on a big-endian machine");
        }
      }
    }
    Unpickler u4(data, u3.pos(), name_);
    const ObjPtr object = u4.load();
    Unpickler u5(data, u4.pos(), name_);
    const ObjPtr keys = u5.load();
    COMBO_CHECK(keys->kind == Kind::kList, "cannot read '", name_,
                "': the storage key list of the torch.save stream is a ", describe(keys));
    collect_storage_types(object);
    size_t pos = u5.pos();
    for (const ObjPtr& key : keys->items) {
      COMBO_CHECK(key->kind == Kind::kStr, "cannot read '", name_, "': a storage key is a ",
                  describe(key));
      auto it = declared_.find(key->s);
      COMBO_CHECK(it != declared_.end(), "cannot read '", name_, "': storage '", key->s,
                  "' is listed but never referenced");
      const StorageType type = it->second.first;
      const int64_t declared_numel = it->second.second;
      COMBO_CHECK(data.size() - pos >= 8, "cannot read '", name_,
                  "': the file is truncated before the element count of storage '", key->s, "'");
      int64_t numel = 0;
      std::memcpy(&numel, data.data() + pos, 8);
      pos += 8;
      COMBO_CHECK(numel == declared_numel, "cannot read '", name_, "': storage '", key->s,
                  "' declares ", declared_numel, " elements but its data block holds ", numel);
      const uint64_t nbytes =
          static_cast<uint64_t>(numel) * static_cast<uint64_t>(type.element_size);
      COMBO_CHECK(numel >= 0 && nbytes <= data.size() - pos, "cannot read '", name_,
                  "': the file is truncated: storage '", key->s, "' needs ", nbytes,
                  " bytes of data, ", data.size() - pos, " remain");
      at::Tensor storage = at::empty({numel}, type.dtype);
      if (nbytes > 0) std::memcpy(storage.data_ptr(), data.data() + pos, nbytes);
      pos += nbytes;
      storages_[key->s] = storage;
    }
    COMBO_CHECK(pos == data.size(), "cannot read '", name_, "': ", data.size() - pos,
                " unexpected bytes after the tensor data");
    return object;
  }

 private:
  // Records (type, numel) of every persistent id ('storage', type, key, location, numel, view).
  void collect_storage_types(const ObjPtr& o) {
    if (o->kind == Kind::kPersistent) {
      const ObjPtr& pid = o->items[0];
      COMBO_CHECK(pid->kind == Kind::kTuple && pid->items.size() >= 5 &&
                      pid->items[0]->kind == Kind::kStr && pid->items[0]->s == "storage" &&
                      pid->items[1]->kind == Kind::kGlobal && pid->items[2]->kind == Kind::kStr &&
                      pid->items[4]->kind == Kind::kInt,
                  "cannot read '", name_, "': unexpected persistent id in a torch.save stream");
      COMBO_CHECK(pid->items.size() < 6 || pid->items[5]->kind == Kind::kNone, "cannot read '",
                  name_, "': storage views (files from torch < 0.4) are not supported");
      StorageType type{};
      COMBO_CHECK(storage_type(pid->items[1]->s, &type), "cannot read '", name_,
                  "': unsupported storage type ", pid->items[1]->s);
      declared_[pid->items[2]->s] = {type, pid->items[4]->i};
      return;
    }
    for (const ObjPtr& child : o->items) collect_storage_types(child);
    if (o->state) collect_storage_types(o->state);
  }

  std::string as_bytes(const ObjPtr& o, const char* what) const {
    COMBO_CHECK(o->kind == Kind::kBytes, "cannot read '", name_, "': ", what, " is a ", describe(o),
                ", expected bytes");
    return o->s;
  }

  int64_t as_int(const ObjPtr& o, const char* what) const {
    COMBO_CHECK(o->kind == Kind::kInt, "cannot read '", name_, "': ", what, " is a ", describe(o),
                ", expected an int");
    return o->i;
  }

  std::vector<int64_t> as_int_tuple(const ObjPtr& o, const char* what) const {
    COMBO_CHECK(o->kind == Kind::kTuple || o->kind == Kind::kList, "cannot read '", name_,
                "': ", what, " is a ", describe(o), ", expected a tuple of ints");
    std::vector<int64_t> v;
    for (const ObjPtr& x : o->items) v.push_back(as_int(x, what));
    return v;
  }

  std::optional<at::Tensor> as_storage(const ObjPtr& o) {
    if (o->kind == Kind::kPersistent) {
      const ObjPtr& pid = o->items[0];
      auto it = storages_.find(pid->items.size() > 2 ? pid->items[2]->s : std::string());
      COMBO_CHECK(it != storages_.end(), "cannot read '", name_,
                  "': a tensor refers to a storage that the file does not contain");
      return it->second;
    }
    if (is_call_to(o, "torch.storage._load_from_bytes")) {
      const auto& args = call_args(o);
      COMBO_CHECK(args.size() == 1, "cannot read '", name_,
                  "': _load_from_bytes takes one argument, got ", args.size());
      Interpreter inner(name_);
      const ObjPtr object = inner.load_legacy(as_bytes(args[0], "the storage payload"));
      COMBO_CHECK(object->kind == Kind::kPersistent, "cannot read '", name_,
                  "': the storage payload holds a ", describe(object), ", expected a storage");
      return inner.as_storage(object);
    }
    return std::nullopt;
  }

  at::Tensor view_of(const at::Tensor& storage, int64_t offset, const std::vector<int64_t>& size,
                     const std::vector<int64_t>& stride) const {
    COMBO_CHECK(size.size() == stride.size(), "cannot read '", name_, "': the tensor has ",
                size.size(), " sizes but ", stride.size(), " strides");
    int64_t last = offset;
    bool empty = false;
    for (size_t d = 0; d < size.size(); ++d) {
      COMBO_CHECK(size[d] >= 0 && stride[d] >= 0, "cannot read '", name_,
                  "': negative size or stride in ", at::IntArrayRef(size), " / ",
                  at::IntArrayRef(stride));
      empty = empty || size[d] == 0;
      if (size[d] > 0) last += (size[d] - 1) * stride[d];
    }
    if (empty) return at::empty(size, storage.options());
    COMBO_CHECK(offset >= 0 && last < storage.numel(), "cannot read '", name_,
                "': a tensor of size ", at::IntArrayRef(size), ", stride ", at::IntArrayRef(stride),
                " and offset ", offset, " needs ", last + 1, " elements but its storage holds ",
                storage.numel());
    return at::empty(size, storage.options()).copy_(storage.as_strided(size, stride, offset));
  }

  std::optional<at::Tensor> as_tensor(const ObjPtr& o) {
    if (is_call_to(o, "torch._utils._rebuild_tensor_v2") ||
        is_call_to(o, "torch._utils._rebuild_tensor")) {
      const auto& args = call_args(o);
      COMBO_CHECK(args.size() >= 4, "cannot read '", name_, "': ", describe(o), " has ",
                  args.size(), " arguments, expected at least 4");
      auto storage = as_storage(args[0]);
      COMBO_CHECK(storage.has_value(), "cannot read '", name_, "': the tensor's storage is a ",
                  describe(args[0]));
      return view_of(*storage, as_int(args[1], "the storage offset"),
                     as_int_tuple(args[2], "the size"), as_int_tuple(args[3], "the stride"));
    }
    if (is_call_to(o, "torch._utils._rebuild_parameter") ||
        is_call_to(o, "torch._utils._rebuild_parameter_with_state")) {
      const auto& args = call_args(o);
      COMBO_CHECK(!args.empty(), "cannot read '", name_, "': ", describe(o), " without data");
      auto t = as_tensor(args[0]);
      COMBO_CHECK(t.has_value(), "cannot read '", name_, "': the parameter's data is a ",
                  describe(args[0]));
      return t;
    }
    if (is_call_to(o, "torch._utils._rebuild_from_type_v2")) {
      // (func, type, args, state): the tensor is func(*args).
      const auto& args = call_args(o);
      COMBO_CHECK(args.size() >= 3, "cannot read '", name_, "': malformed _rebuild_from_type_v2");
      auto inner = make(Kind::kCall);
      inner->items = {args[0], args[2]};
      return as_tensor(inner);
    }
    if (is_call_to(o, "multiarray._reconstruct")) return numpy_array(o);
    if (is_call_to(o, "numeric._frombuffer")) {
      const auto& args = call_args(o);
      COMBO_CHECK(args.size() == 4, "cannot read '", name_, "': malformed numpy _frombuffer");
      const std::string order = args[3]->kind == Kind::kStr ? args[3]->s : "C";
      return numpy_from_bytes(as_bytes(args[0], "the array data"), numpy_dtype(args[1]),
                              as_int_tuple(args[2], "the array shape"), order == "F");
    }
    return std::nullopt;
  }

  at::ScalarType numpy_dtype(const ObjPtr& o) const {
    COMBO_CHECK(is_call_to(o, "numpy.dtype") && !call_args(o).empty() &&
                    call_args(o)[0]->kind == Kind::kStr,
                "cannot read '", name_, "': expected a numpy dtype, found ", describe(o));
    const std::string descr = call_args(o)[0]->s;
    if (o->state && o->state->kind == Kind::kTuple && o->state->items.size() > 1 &&
        o->state->items[1]->kind == Kind::kStr) {
      const std::string& order = o->state->items[1]->s;
      COMBO_CHECK(order != ">" || descr == "b1" || descr == "i1" || descr == "u1", "cannot read '",
                  name_, "': big-endian numpy arrays are not supported");
    }
    static const std::map<std::string, at::ScalarType> kTypes = {
        {"f2", at::kHalf}, {"f4", at::kFloat}, {"f8", at::kDouble},
        {"i1", at::kChar}, {"i2", at::kShort}, {"i4", at::kInt},
        {"i8", at::kLong}, {"u1", at::kByte},  {"b1", at::kBool},
    };
    auto it = kTypes.find(descr);
    COMBO_CHECK(it != kTypes.end(), "cannot read '", name_, "': unsupported numpy dtype '", descr,
                "'");
    return it->second;
  }

  at::Tensor numpy_from_bytes(const std::string& bytes, at::ScalarType dtype,
                              const std::vector<int64_t>& shape, bool fortran) const {
    int64_t numel = 1;
    for (int64_t s : shape) numel *= s;
    const size_t nbytes = static_cast<size_t>(numel) * at::elementSize(dtype);
    COMBO_CHECK(bytes.size() == nbytes, "cannot read '", name_, "': a numpy array of shape ",
                at::IntArrayRef(shape), " needs ", nbytes, " bytes, the file holds ", bytes.size());
    std::vector<int64_t> storage_shape = shape;
    if (fortran) storage_shape.assign(shape.rbegin(), shape.rend());
    at::Tensor t = at::empty(storage_shape, dtype);
    if (nbytes > 0) std::memcpy(t.data_ptr(), bytes.data(), nbytes);
    if (fortran) {
      std::vector<int64_t> perm(shape.size());
      for (size_t d = 0; d < shape.size(); ++d)
        perm[d] = static_cast<int64_t>(shape.size() - 1 - d);
      t = t.permute(perm).contiguous();
    }
    return t;
  }

  at::Tensor numpy_array(const ObjPtr& o) const {
    // _reconstruct(ndarray, (0,), b'b') + BUILD (version, shape, dtype, is_fortran, raw data).
    const ObjPtr& state = o->state;
    COMBO_CHECK(state && state->kind == Kind::kTuple && state->items.size() == 5, "cannot read '",
                name_, "': a numpy array without its state");
    const auto& st = state->items;
    COMBO_CHECK(st[4]->kind == Kind::kBytes, "cannot read '", name_,
                "': numpy arrays of Python objects are not supported");
    return numpy_from_bytes(st[4]->s, numpy_dtype(st[2]), as_int_tuple(st[1], "the array shape"),
                            st[3]->kind == Kind::kBool && st[3]->i == 1);
  }

  std::string name_;
  std::map<std::string, std::pair<StorageType, int64_t>> declared_;
  std::map<std::string, at::Tensor> storages_;
};

std::string read_file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  COMBO_CHECK(f.good(), "cannot open '", path, "': ", std::strerror(errno));
  std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  COMBO_CHECK(!f.bad(), "cannot read '", path, "': ", std::strerror(errno));
  COMBO_CHECK(!bytes.empty(), "cannot read '", path, "': the file is empty");
  return bytes;
}

Interpreter::Result parse(const std::string& bytes, const std::string& name) {
  COMBO_CHECK(host_is_little_endian(), "pickled tensors can only be read on little-endian hosts");
  COMBO_CHECK(!bytes.empty(), "cannot read '", name, "': the file is empty");
  if (bytes.compare(0, 4, std::string("PK\x03\x04", 4)) == 0) {
    // A zip torch.save file: LibTorch reads those itself.
    c10::IValue value;
    try {
      value = torch::pickle_load(std::vector<char>(bytes.begin(), bytes.end()));
    } catch (const std::exception& e) {
      const std::string what = e.what();
      COMBO_FAIL("cannot read '", name,
                 "' (a torch.save zip file): ", what.substr(0, what.find('\n')));
    }
    COMBO_CHECK(value.isTensor(), "cannot read '", name, "': the torch.save file holds a ",
                value.tagKind(), ", expected a tensor");
    return {value.toTensor().detach().contiguous(), true};
  }
  const auto first = static_cast<uint8_t>(bytes[0]);
  COMBO_CHECK(first == 0x80 || first == '(' || first == 'c' || first == ']' || first == '}',
              "cannot read '", name, "': not a Python pickle (first byte 0x", std::hex,
              static_cast<int>(first), ")");
  Unpickler u(bytes, 0, name);
  const ObjPtr root = u.load();
  Interpreter interpreter(name);
  if (root->kind == Kind::kBigInt && root->s == kLegacyMagic) {
    // A legacy (non-zip) torch.save file of a tensor.
    return interpreter.interpret_root(interpreter.load_legacy(bytes));
  }
  return interpreter.interpret_root(root);
}

}  // namespace

at::Tensor parse_pickled_tensor(const std::string& bytes, const std::string& name) {
  return parse(bytes, name).tensor;
}

at::Tensor read_pickled_tensor(const std::string& path) {
  return parse(read_file_bytes(path), path).tensor;
}

at::Tensor read_log_mel_pkl(const std::string& path) {
  constexpr int64_t kFrames = 96;
  constexpr int64_t kBands = 64;
  Interpreter::Result r = parse(read_file_bytes(path), path);
  at::Tensor t = r.tensor;
  COMBO_CHECK(at::isFloatingType(t.scalar_type()), "log-mel file '", path, "' holds a ",
              t.scalar_type(), " tensor, expected float32");
  if (!r.has_shape) {
    COMBO_CHECK(t.numel() > 0 && t.numel() % (kFrames * kBands) == 0, "log-mel file '", path,
                "' holds a bare storage of ", t.numel(), " elements, not a multiple of 96*64");
    t = t.view({t.numel() / (kFrames * kBands), 1, kFrames, kBands});
  }
  COMBO_CHECK(t.dim() == 4 && t.size(0) > 0 && t.size(1) == 1 && t.size(2) == kFrames &&
                  t.size(3) == kBands,
              "log-mel file '", path, "' holds a tensor of shape ", t.sizes(),
              ", expected [n, 1, 96, 64]");
  return t.to(at::kFloat).contiguous();
}

}  // namespace combo::io
