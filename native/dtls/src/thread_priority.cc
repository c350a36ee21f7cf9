// Scheduling priority of the forwarding threads (see thread_priority.h).
#include "thread_priority.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

namespace seng_dtls {

namespace {

constexpr int kDefaultDelta = -10;

// SENG_FORWARD_NICE as a number in -39..39 (a change of the nice value), else the default.
int requestedDelta() {
  const char *env = std::getenv("SENG_FORWARD_NICE");
  if (env == nullptr || *env == '\0') return kDefaultDelta;
  char *end = nullptr;
  const long v = std::strtol(env, &end, 10);
  if (*end != '\0' || v < -39 || v > 39) return kDefaultDelta;
  return static_cast<int>(v);
}

}  // namespace

ThreadPriority raiseForwardingPriority() {
  ThreadPriority result;
  const auto tid = static_cast<id_t>(syscall(SYS_gettid));
  errno = 0;
  const int current = getpriority(PRIO_PROCESS, tid);  // this thread only (Linux: nice is per thread)
  if (current == -1 && errno != 0) return result;
  result.nice = current;
  const int delta = requestedDelta();
  if (delta == 0) return result;
  int target = current + delta;
  if (target < -20) target = -20;
  if (target > 19) target = 19;
  if (target == current) return result;
  if (setpriority(PRIO_PROCESS, tid, target) != 0) return result;  // EPERM/EACCES: stay as we are
  result.raised = true;
  result.nice = target;
  return result;
}

}  // namespace seng_dtls
