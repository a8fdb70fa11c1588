#pragma once
/// Opt-in wall-clock breakdown of the model and the training step (what `combo-bench` reports).
///
/// Code marks its stages with COMBO_PROFILE_SCOPE("name"). Nothing is recorded unless a Profile
/// is active on the calling thread (ProfileActivation); inactive, a scope costs one thread-local
/// read. Scopes nest: an inner stage's time is also part of its outer stage's (e.g. "matcher"
/// inside "criterion"). On CUDA the owner sets `synchronize` so each scope waits for the device
/// before it reads the clock (asynchronous kernels would otherwise be charged to a later stage).
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>

namespace combo::prof {

struct Profile {
  std::map<std::string, double> seconds;  ///< total wall time per stage
  std::map<std::string, int64_t> calls;   ///< times each stage ran
  std::function<void()> synchronize;      ///< called at scope entry and exit when set
  void clear() {
    seconds.clear();
    calls.clear();
  }
};

/// The profile active on this thread (nullptr: none).
Profile* active();

/// Makes `profile` the active one on this thread for its lifetime (restores the previous one).
class ProfileActivation {
 public:
  explicit ProfileActivation(Profile* profile);
  ~ProfileActivation();
  ProfileActivation(const ProfileActivation&) = delete;
  ProfileActivation& operator=(const ProfileActivation&) = delete;

 private:
  Profile* previous_;
};

/// Adds the time from construction to destruction to `name` in the active profile, if any.
class Scope {
 public:
  explicit Scope(const char* name) : profile_(active()), name_(name) {
    if (profile_) {
      if (profile_->synchronize) profile_->synchronize();
      start_ = std::chrono::steady_clock::now();
    }
  }
  ~Scope() {
    if (profile_) {
      if (profile_->synchronize) profile_->synchronize();
      const std::chrono::duration<double> d = std::chrono::steady_clock::now() - start_;
      profile_->seconds[name_] += d.count();
      profile_->calls[name_] += 1;
    }
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  Profile* profile_;
  const char* name_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace combo::prof

#define COMBO_PROFILE_CONCAT_INNER(a, b) a##b
#define COMBO_PROFILE_CONCAT(a, b) COMBO_PROFILE_CONCAT_INNER(a, b)
/// Times the rest of the enclosing block as stage `name` (a string literal).
#define COMBO_PROFILE_SCOPE(name) \
  ::combo::prof::Scope COMBO_PROFILE_CONCAT(combo_profile_scope_, __LINE__)(name)
