#include "combo/core/profile.h"

namespace combo::prof {

namespace {
thread_local Profile* g_active = nullptr;
}  // namespace

Profile* active() { return g_active; }

ProfileActivation::ProfileActivation(Profile* profile) : previous_(g_active) { g_active = profile; }

ProfileActivation::~ProfileActivation() { g_active = previous_; }

}  // namespace combo::prof
