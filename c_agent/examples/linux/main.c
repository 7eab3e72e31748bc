/* An example HARCP agent for Linux: connects to an MQTT broker (hbroker), answers signed
 * commands for two operations and capability queries, and reports its status at start.
 *
 *   led.set   args {on: bool}   result {on: bool}      (a simulated LED)
 *   sys.info  args {}           result {uptime_s, hostname, load: [1, 5, 15 min]}
 *
 * Keys are files in the format of docs/harcp.md §7 (`hbroker keys generate`): the device's
 * private key (--key) and one or two trusted controller public keys (--trust). The sequence
 * counters are kept in a state file (--state) so a restart does not reset them. */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

#include "har_agent.h"
#include "har_keyfile.h"

#define MAX_STATE 8

typedef struct {
    const char *path;
    size_t n;
    uint8_t key_id[MAX_STATE][HAR_KEY_ID_LEN];
    uint32_t sequence[MAX_STATE];
} state_file;

static volatile sig_atomic_t stop;
static int verbose;
static int led_on;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void log_line(void *ctx, har_log_level level, const char *message)
{
    struct timespec ts;
    (void)ctx;
    if (level == HAR_LOG_DEBUG && !verbose)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    fprintf(stderr, "har-agent %ld.%03ld %s: %s\n", (long)ts.tv_sec, ts.tv_nsec / 1000000L,
            level == HAR_LOG_ERROR ? "error" : "info", message);
}

/* ---- sequence persistence: one "key_id_hex sequence" line per key ---- */

static void state_save(const state_file *s)
{
    char tmp[1024], hex[17];
    FILE *f;
    size_t i;
    snprintf(tmp, sizeof tmp, "%s.tmp", s->path);
    f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "har-agent: cannot write %s: %s\n", tmp, strerror(errno));
        return;
    }
    for (i = 0; i < s->n; i++) {
        har_hex_encode(s->key_id[i], HAR_KEY_ID_LEN, hex);
        fprintf(f, "%s %lu\n", hex, (unsigned long)s->sequence[i]);
    }
    if (fflush(f) != 0 || fsync(fileno(f)) != 0 || fclose(f) != 0 || rename(tmp, s->path) != 0)
        fprintf(stderr, "har-agent: cannot save %s: %s\n", s->path, strerror(errno));
}

static void persist(void *ctx, const uint8_t key_id[HAR_KEY_ID_LEN], uint32_t sequence)
{
    state_file *s = ctx;
    size_t i;
    for (i = 0; i < s->n; i++)
        if (memcmp(s->key_id[i], key_id, HAR_KEY_ID_LEN) == 0)
            break;
    if (i == s->n) {
        if (s->n == MAX_STATE)
            return;
        memcpy(s->key_id[s->n++], key_id, HAR_KEY_ID_LEN);
    }
    s->sequence[i] = sequence;
    if (s->path)
        state_save(s);
}

static int state_load(state_file *s, har_agent *a)
{
    char line[128];
    FILE *f = fopen(s->path, "r");
    if (!f)
        return errno == ENOENT ? 0 : -1;
    while (fgets(line, sizeof line, f)) {
        char hex[17];
        unsigned long seq;
        uint8_t kid[HAR_KEY_ID_LEN];
        if (sscanf(line, "%16s %lu", hex, &seq) != 2 ||
            har_hex_decode(hex, strlen(hex), kid, HAR_KEY_ID_LEN) || seq > UINT32_MAX) {
            fclose(f);
            return -1;
        }
        har_agent_restore_sequence(a, kid, (uint32_t)seq);
        if (s->n < MAX_STATE) {
            memcpy(s->key_id[s->n], kid, HAR_KEY_ID_LEN);
            s->sequence[s->n++] = (uint32_t)seq;
        }
    }
    fclose(f);
    return 0;
}

/* ---- operations ---- */

static int led_set(void *ctx, har_request *req)
{
    har_mp_reader v;
    int on;
    uint32_t n, i;
    int found = 0;
    (void)ctx;
    /* args: {on: bool} */
    v = req->args;
    if (har_mp_read_map(&v, &n) == 0) {
        for (i = 0; i < n; i++) {
            const char *k;
            uint32_t kl;
            if (har_mp_read_str(&v, &k, &kl))
                break;
            if (har_mp_str_eq(k, kl, "on")) {
                found = har_mp_read_bool(&v, &on) == 0;
                break;
            }
            har_mp_skip(&v);
        }
    }
    if (!found) {
        req->error_code = 1;
        snprintf(req->error_message, sizeof req->error_message, "args.on must be a bool");
        return -1;
    }
    led_on = on;
    fprintf(stderr, "har-agent: LED %s\n", on ? "on" : "off");
    har_mp_write_map(req->result, 1);
    har_mp_write_cstr(req->result, "on");
    har_mp_write_bool(req->result, led_on);
    return 0;
}

static int sys_info(void *ctx, har_request *req)
{
    struct sysinfo si;
    char host[256];
    (void)ctx;
    if (sysinfo(&si) != 0 || gethostname(host, sizeof host) != 0) {
        req->error_code = 2;
        snprintf(req->error_message, sizeof req->error_message, "%s", strerror(errno));
        return -1;
    }
    host[sizeof host - 1] = '\0';
    har_mp_write_map(req->result, 3);
    har_mp_write_cstr(req->result, "uptime_s");
    har_mp_write_uint(req->result, (uint64_t)si.uptime);
    har_mp_write_cstr(req->result, "hostname");
    har_mp_write_cstr(req->result, host);
    har_mp_write_cstr(req->result, "load");
    har_mp_write_array(req->result, 3);
    har_mp_write_float64(req->result, si.loads[0] / (double)(1 << SI_LOAD_SHIFT));
    har_mp_write_float64(req->result, si.loads[1] / (double)(1 << SI_LOAD_SHIFT));
    har_mp_write_float64(req->result, si.loads[2] / (double)(1 << SI_LOAD_SHIFT));
    return 0;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: har_agent_example --device-id ID --key DEVICE.key --trust CONTROLLER.pub\n"
            "                         [--trust NEXT.pub] [--host HOST] [--port PORT]\n"
            "                         [--state FILE] [--keepalive S] [--window-ms MS]\n"
            "                         [--allow-unsigned] [--verbose]\n"
            "  --host HOST        broker host (default 127.0.0.1)\n"
            "  --port PORT        broker port (default 1883)\n"
            "  --device-id ID     this device's id: topics harcp/v1/ID/down and /up\n"
            "  --key FILE         the device's private key file (mode 0600)\n"
            "  --trust FILE       a trusted controller public key file (up to %d)\n"
            "  --state FILE       where the sequence counters survive restarts\n"
            "                     (default: ID.state in the working directory)\n"
            "  --keepalive S      MQTT keepalive in seconds (default 30)\n"
            "  --window-ms MS     accepted clock difference (default 300000)\n"
            "  --allow-unsigned   security tier \"open\": accept unsigned frames\n",
            HAR_MAX_TRUSTED_KEYS);
}

static uint64_t uptime_s(void)
{
    struct sysinfo si;
    return sysinfo(&si) == 0 ? (uint64_t)si.uptime : 0;
}

int main(int argc, char **argv)
{
    static har_agent agent; /* large: keep it off the stack */
    static state_file state;
    har_agent_config cfg;
    har_posix_socket ps;
    har_socket sock;
    har_keyfile kf;
    const char *key_path = NULL, *trust_paths[HAR_MAX_TRUSTED_KEYS];
    char default_state[HAR_MAX_DEVICE_ID + 8], host_name[256];
    size_t n_trust = 0, i;
    int rc;
    uint8_t inventory[320];
    har_mp_writer inv;
    struct sigaction sa;

    memset(&cfg, 0, sizeof cfg);
    cfg.host = "127.0.0.1";
    cfg.port = 1883;
    for (i = 1; i < (size_t)argc; i++) {
        const char *arg = argv[i], *val = i + 1 < (size_t)argc ? argv[i + 1] : NULL;
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(arg, "--allow-unsigned") == 0) {
            cfg.allow_unsigned = 1;
            continue;
        } else if (strcmp(arg, "--verbose") == 0) {
            verbose = 1;
            continue;
        }
        if (!val) {
            usage(stderr);
            return 2;
        }
        i++;
        if (strcmp(arg, "--host") == 0)
            cfg.host = val;
        else if (strcmp(arg, "--port") == 0)
            cfg.port = (uint16_t)atoi(val);
        else if (strcmp(arg, "--device-id") == 0)
            cfg.device_id = val;
        else if (strcmp(arg, "--key") == 0)
            key_path = val;
        else if (strcmp(arg, "--trust") == 0 && n_trust < HAR_MAX_TRUSTED_KEYS)
            trust_paths[n_trust++] = val;
        else if (strcmp(arg, "--state") == 0)
            state.path = val;
        else if (strcmp(arg, "--keepalive") == 0)
            cfg.keepalive_s = (uint16_t)atoi(val);
        else if (strcmp(arg, "--window-ms") == 0)
            cfg.window_ms = strtoull(val, NULL, 10);
        else {
            usage(stderr);
            return 2;
        }
    }
    if (!cfg.device_id || !key_path || n_trust == 0) {
        usage(stderr);
        return 2;
    }
    setvbuf(stderr, NULL, _IOLBF, 0);

    cfg.crypto = har_crypto_sodium();
    if (!cfg.crypto) {
        fprintf(stderr, "har-agent: libsodium initialisation failed\n");
        return 1;
    }
    rc = har_keyfile_load(key_path, cfg.crypto, &kf);
    if (rc != HAR_KEYFILE_OK || !kf.has_secret) {
        fprintf(stderr, "har-agent: %s: %s\n", key_path,
                rc ? har_keyfile_strerror(rc) : "no secret: a device key file is needed");
        return 1;
    }
    har_signing_key_from_seed(cfg.crypto, kf.seed, &cfg.device_key);
    memset(&kf, 0, sizeof kf);

    har_socket_posix_init(&sock, &ps);
    cfg.socket = &sock;
    cfg.monotonic_ms = har_posix_monotonic_ms;
    cfg.realtime_ms = har_posix_realtime_ms;
    cfg.persist = persist;
    cfg.persist_ctx = &state;
    cfg.log = log_line;
    if (har_agent_init(&agent, &cfg)) {
        fprintf(stderr, "har-agent: bad configuration (device id: 1..%d chars, no / + #)\n",
                HAR_MAX_DEVICE_ID);
        return 2;
    }
    for (i = 0; i < n_trust; i++) {
        rc = har_keyfile_load(trust_paths[i], cfg.crypto, &kf);
        if (rc != HAR_KEYFILE_OK) {
            fprintf(stderr, "har-agent: %s: %s\n", trust_paths[i], har_keyfile_strerror(rc));
            return 1;
        }
        har_agent_trust(&agent, kf.public_key);
    }
    if (!state.path) {
        snprintf(default_state, sizeof default_state, "%s.state", cfg.device_id);
        state.path = default_state;
    }
    if (state_load(&state, &agent)) {
        fprintf(stderr, "har-agent: %s: unreadable state file\n", state.path);
        return 1;
    }
    har_agent_register(&agent, "led.set", led_set, NULL);
    har_agent_register(&agent, "sys.info", sys_info, NULL);

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    {
        char kid[17];
        har_hex_encode(cfg.device_key.key_id, HAR_KEY_ID_LEN, kid);
        fprintf(stderr, "har-agent: device %s, key id %s, %zu trusted key(s), broker %s:%u\n",
                cfg.device_id, kid, n_trust, cfg.host, (unsigned)cfg.port);
    }
    if (har_agent_connect(&agent))
        fprintf(stderr, "har-agent: broker not reachable yet, retrying\n");

    /* status at start: queued with QoS 1 if the broker is not reachable yet */
    if (gethostname(host_name, sizeof host_name) != 0)
        strcpy(host_name, "unknown");
    host_name[sizeof host_name - 1] = '\0';
    har_mp_writer_init(&inv, inventory, sizeof inventory);
    har_mp_write_map(&inv, 3);
    har_mp_write_cstr(&inv, "agent");
    har_mp_write_cstr(&inv, HAR_AGENT_NAME);
    har_mp_write_cstr(&inv, "hostname");
    har_mp_write_cstr(&inv, host_name);
    har_mp_write_cstr(&inv, "ops");
    har_mp_write_array(&inv, 2);
    har_mp_write_cstr(&inv, "led.set");
    har_mp_write_cstr(&inv, "sys.info");
    if (inv.err || har_agent_report_status(&agent, "ok", uptime_s(), inventory, inv.pos))
        fprintf(stderr, "har-agent: cannot queue the status report\n");

    while (!stop)
        har_agent_step(&agent, 500);
    har_agent_close(&agent);
    fprintf(stderr, "har-agent: stopped\n");
    return 0;
}
