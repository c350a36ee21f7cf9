/* The pure packet functions of native/common exported to JS, for unit tests and tools. */
#ifndef SENG_TUN_PURE_H
#define SENG_TUN_PURE_H
#include <node_api.h>

/* Adds gsoSplit, groCoalesce, ipv4Check, l4ChecksumOk and udpGroSplit to `exports`; 0 on failure (an
 * exception is pending). */
int register_pure_functions(napi_env env, napi_value exports);

#endif
