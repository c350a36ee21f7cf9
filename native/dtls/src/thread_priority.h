// Scheduling priority of the forwarding threads (the receive thread and the dispatch thread):
// they run at a lower nice value than the JavaScript thread, so that when the CPU is contended —
// e.g. by an admission storm, whose handshakes and attestations run on the JavaScript thread —
// the kernel gives forwarding of established sessions the CPU first and the control plane the
// rest. Linux keeps the nice value per thread (setpriority(2) on a thread id); lowering it needs
// CAP_SYS_NICE (root) or an RLIMIT_NICE that allows it. Without either, the thread stays at the
// process's nice value, silently: the gateway works the same, only without the preference.
//
// SENG_FORWARD_NICE=N sets the change relative to the thread's nice value at start (default -10,
// i.e. ≈ 9× the CPU share of a nice-0 thread under CFS; 0 turns it off; clamped to -20..19).
#pragma once

namespace seng_dtls {

// The calling thread's result: whether its nice value was changed, and the value it runs at.
struct ThreadPriority {
  bool raised = false;
  int nice = 0;
};

// Lowers the calling thread's nice value as above; call first thing on a forwarding thread.
ThreadPriority raiseForwardingPriority();

}  // namespace seng_dtls
