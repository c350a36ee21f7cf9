{
  "targets": [
    {
      "target_name": "seng_dtls",
      "sources": [
        "src/module.cc", "src/common.cc", "src/address.cc", "src/pipe.cc", "src/cookie.cc",
        "src/context.cc", "src/conn.cc", "src/record_keys.cc", "src/record_layer.cc", "src/tun_forward.cc",
        "src/tun_writer.cc", "src/udp_send_batch.cc", "src/tun_dispatch.cc", "src/recv_thread.cc", "src/thread_priority.cc", "src/endpoint.cc", "../common/seng_net.c"
      ],
      "include_dirs": ["<!(node -p \"require('path').dirname(require.resolve('node-addon-api/package.json'))\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "OPENSSL_API_COMPAT=30000", "OPENSSL_NO_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-fexceptions", "-fstack-protector-strong"],
      "conditions": [
        ["OS=='mac'", { "xcode_settings": { "GCC_ENABLE_CPP_EXCEPTIONS": "YES" } }]
      ]
    }
  ]
}
