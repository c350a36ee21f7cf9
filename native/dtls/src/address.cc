// Socket addresses from JavaScript strings (see address.h).
#include "address.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>

namespace seng_dtls {

bool parseAddress(const std::string &host, int port, sockaddr_storage *ss, socklen_t *len, std::vector<uint8_t> *key) {
  if (port < 0 || port > 65535) return false;
  std::memset(ss, 0, sizeof *ss);
  auto *v4 = reinterpret_cast<sockaddr_in *>(ss);
  auto *v6 = reinterpret_cast<sockaddr_in6 *>(ss);
  const auto portHi = static_cast<uint8_t>(port >> 8);
  const auto portLo = static_cast<uint8_t>(port);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    *len = sizeof(sockaddr_in);
    if (key != nullptr) {
      const auto *a = reinterpret_cast<const uint8_t *>(&v4->sin_addr);
      key->assign({4, a[0], a[1], a[2], a[3], portHi, portLo});
    }
    return true;
  }
  if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    *len = sizeof(sockaddr_in6);
    if (key != nullptr) {
      const auto *a = reinterpret_cast<const uint8_t *>(&v6->sin6_addr);
      key->assign({6});
      key->insert(key->end(), a, a + 16);
      key->push_back(portHi);
      key->push_back(portLo);
    }
    return true;
  }
  return false;
}

}  // namespace seng_dtls
