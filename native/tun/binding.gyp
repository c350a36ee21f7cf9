{
  "targets": [
    {
      "target_name": "tun",
      "sources": ["src/tun.c", "src/pure.c", "../common/seng_net.c"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Werror=implicit-function-declaration", "-O2"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
