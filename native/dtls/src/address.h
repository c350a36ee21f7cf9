// Socket addresses from JavaScript strings.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <vector>

namespace seng_dtls {

// Parses an IPv4 or IPv6 literal and a port into *ss / *len. With `key`, also fills in the peer's
// identity for the cookie HMAC: family (4 or 6), address bytes, port (big-endian).
bool parseAddress(const std::string &host, int port, sockaddr_storage *ss, socklen_t *len, std::vector<uint8_t> *key);

// IP + UDP header bytes for the address family (what a datagram costs beyond its payload).
inline long udpOverhead(const sockaddr_storage &ss) { return ss.ss_family == AF_INET6 ? 48 : 28; }

}  // namespace seng_dtls
