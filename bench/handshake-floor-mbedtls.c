/*
 * The same measurement as bench/handshake-floor.c (issue 13) with mbedTLS instead of OpenSSL: server-side CPU per
 * DTLS 1.2 handshake in memory, ECDHE-ECDSA-AES128-GCM-SHA256 on P-256, client certificate required (accepted by a
 * callback, as the gateway's acceptChainAndHold), cookie exchange; only the server's calls are timed (thread CPU
 * time). Certificates as made for handshake-floor.c.
 *
 *   apt-get install -y libmbedtls-dev
 *   gcc -O2 -o /tmp/floor-x bench/handshake-floor-mbedtls.c -lmbedtls -lmbedx509 -lmbedcrypto
 *   /tmp/floor-x 300 /tmp/hsfloor
 *
 * Not part of the build or of npm test: a measuring tool (numbers in bench/findings.md).
 */
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_cookie.h>
#include <mbedtls/entropy.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/x509_crt.h>
#include <mbedtls/pk.h>
#include <mbedtls/timing.h>
#include <mbedtls/error.h>
#include <mbedtls/version.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define QN 64
#define DG 4096
typedef struct { unsigned char d[QN][DG]; size_t len[QN]; int head, n; } dq;
typedef struct { dq *in, *out; } ends;
static int q_send(void *ctx, const unsigned char *buf, size_t len) {
  ends *e = ctx; dq *q = e->out;
  if (q->n >= QN || len > DG) return (int)len;
  int i = (q->head + q->n) % QN; memcpy(q->d[i], buf, len); q->len[i] = len; q->n++; return (int)len;
}
static int q_recv(void *ctx, unsigned char *buf, size_t len) {
  ends *e = ctx; dq *q = e->in;
  if (q->n == 0) return MBEDTLS_ERR_SSL_WANT_READ;
  size_t l = q->len[q->head]; if (l > len) l = len;
  memcpy(buf, q->d[q->head], l); q->head = (q->head + 1) % QN; q->n--; return (int)l;
}
static int accept_any(void *p, mbedtls_x509_crt *crt, int depth, uint32_t *flags) { (void)p; (void)crt; (void)depth; *flags = 0; return 0; }
static double tcpu(void) { struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec * 1e6 + t.tv_nsec / 1e3; }
static void die(const char *w, int r) { char b[200]; mbedtls_strerror(r, b, sizeof b); fprintf(stderr, "%s: -0x%x %s\n", w, -r, b); exit(1); }

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 200; const char *dir = argc > 2 ? argv[2] : "/tmp/hsfloor";
  char p[512];
  mbedtls_entropy_context ent; mbedtls_ctr_drbg_context rng;
  mbedtls_entropy_init(&ent); mbedtls_ctr_drbg_init(&rng);
  mbedtls_ctr_drbg_seed(&rng, mbedtls_entropy_func, &ent, NULL, 0);
  mbedtls_x509_crt scrt, ccrt; mbedtls_pk_context skey, ckey;
  mbedtls_x509_crt_init(&scrt); mbedtls_x509_crt_init(&ccrt); mbedtls_pk_init(&skey); mbedtls_pk_init(&ckey);
  int r;
  snprintf(p, sizeof p, "%s/srv.pem", dir); if ((r = mbedtls_x509_crt_parse_file(&scrt, p))) die("srv.pem", r);
  snprintf(p, sizeof p, "%s/srv.key", dir); if ((r = mbedtls_pk_parse_keyfile(&skey, p, NULL))) die("srv.key", r);
  snprintf(p, sizeof p, "%s/cli.pem", dir); if ((r = mbedtls_x509_crt_parse_file(&ccrt, p))) die("cli.pem", r);
  snprintf(p, sizeof p, "%s/cli.key", dir); if ((r = mbedtls_pk_parse_keyfile(&ckey, p, NULL))) die("cli.key", r);
  static const int suites[] = {MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, 0};
  static const mbedtls_ecp_group_id curves[] = {MBEDTLS_ECP_DP_SECP256R1, MBEDTLS_ECP_DP_NONE};
  mbedtls_ssl_config sc, cc; mbedtls_ssl_config_init(&sc); mbedtls_ssl_config_init(&cc);
  mbedtls_ssl_config_defaults(&sc, MBEDTLS_SSL_IS_SERVER, MBEDTLS_SSL_TRANSPORT_DATAGRAM, MBEDTLS_SSL_PRESET_DEFAULT);
  mbedtls_ssl_config_defaults(&cc, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_DATAGRAM, MBEDTLS_SSL_PRESET_DEFAULT);
  mbedtls_ssl_config *cfgs[2] = {&sc, &cc};
  for (int i = 0; i < 2; i++) {
    mbedtls_ssl_conf_rng(cfgs[i], mbedtls_ctr_drbg_random, &rng);
    mbedtls_ssl_conf_ciphersuites(cfgs[i], suites);
    mbedtls_ssl_conf_curves(cfgs[i], curves);
    mbedtls_ssl_conf_min_version(cfgs[i], MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_handshake_timeout(cfgs[i], 1000, 60000);
  }
  mbedtls_ssl_conf_own_cert(&sc, &scrt, &skey); mbedtls_ssl_conf_own_cert(&cc, &ccrt, &ckey);
  mbedtls_ssl_conf_authmode(&sc, MBEDTLS_SSL_VERIFY_REQUIRED); mbedtls_ssl_conf_ca_chain(&sc, &ccrt, NULL);
  mbedtls_ssl_conf_verify(&sc, accept_any, NULL);
  mbedtls_ssl_conf_authmode(&cc, MBEDTLS_SSL_VERIFY_NONE);
  mbedtls_ssl_cookie_ctx ck; mbedtls_ssl_cookie_init(&ck); mbedtls_ssl_cookie_setup(&ck, mbedtls_ctr_drbg_random, &rng);
  mbedtls_ssl_conf_dtls_cookies(&sc, mbedtls_ssl_cookie_write, mbedtls_ssl_cookie_check, &ck);
  static dq a, b; /* a: client -> server, b: server -> client */
  ends se = {&a, &b}, ce = {&b, &a};
  double total = 0; int ok = 0;
  for (int k = 0; k < n; k++) {
    a.n = a.head = b.n = b.head = 0;
    mbedtls_ssl_context s, c; mbedtls_timing_delay_context ts, tc;
    double t0 = tcpu();
    mbedtls_ssl_init(&s); mbedtls_ssl_setup(&s, &sc);
    mbedtls_ssl_set_bio(&s, &se, q_send, q_recv, NULL);
    mbedtls_ssl_set_timer_cb(&s, &ts, mbedtls_timing_set_delay, mbedtls_timing_get_delay);
    mbedtls_ssl_set_mtu(&s, 1500);
    const unsigned char tid[] = {10, 52, 0, 2, 0x30, 0x39};
    mbedtls_ssl_set_client_transport_id(&s, tid, sizeof tid);
    double srv = tcpu() - t0;
    mbedtls_ssl_init(&c); mbedtls_ssl_setup(&c, &cc);
    mbedtls_ssl_set_bio(&c, &ce, q_send, q_recv, NULL);
    mbedtls_ssl_set_timer_cb(&c, &tc, mbedtls_timing_set_delay, mbedtls_timing_get_delay);
    mbedtls_ssl_set_mtu(&c, 1500);
    int sdone = 0, cdone = 0, steps = 0;
    while ((!sdone || !cdone) && steps++ < 200) {
      if (!cdone) { int rc = mbedtls_ssl_handshake(&c); if (rc == 0) cdone = 1; else if (rc != MBEDTLS_ERR_SSL_WANT_READ && rc != MBEDTLS_ERR_SSL_WANT_WRITE) die("client", rc); }
      if (!sdone) {
        double t1 = tcpu(); int rc = mbedtls_ssl_handshake(&s);
        if (rc == MBEDTLS_ERR_SSL_HELLO_VERIFY_REQUIRED) { mbedtls_ssl_session_reset(&s); mbedtls_ssl_set_client_transport_id(&s, tid, sizeof tid); }
        srv += tcpu() - t1;
        if (rc == 0) sdone = 1; else if (rc != MBEDTLS_ERR_SSL_WANT_READ && rc != MBEDTLS_ERR_SSL_WANT_WRITE && rc != MBEDTLS_ERR_SSL_HELLO_VERIFY_REQUIRED) die("server", rc);
      }
    }
    double t2 = tcpu(); mbedtls_ssl_free(&s); srv += tcpu() - t2;
    mbedtls_ssl_free(&c);
    if (sdone && cdone) { ok++; total += srv; }
  }
  printf("mbedTLS %s: handshakes %d/%d (cookie exchange): server %.1f us/handshake\n", MBEDTLS_VERSION_STRING, ok, n, ok ? total / ok : 0);
  return 0;
}
