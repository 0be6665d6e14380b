/*
 * loop.c: every client connection, in one thread (the main thread) around poll(). No thread is spent on a
 * connection: one that sends half a request and waits costs a descriptor and this struct, until --timeout cuts it.
 *
 * A connection reads its request (head, then body, within --timeout of its accept), is answered by a route (most
 * answers are made here; a completion is queued for the generation thread), sends its answer from its outbox,
 * then drains what the client still sends for a moment so that closing does not reset an answer it has not read.
 *
 * The outbox is the one thing the two threads share per connection, under the server's lock: the generation thread
 * appends (conn_send) and never blocks on a socket; this thread takes the whole outbox when its last batch is sent,
 * and sends it as the socket takes it. A client that stops reading fills its outbox: past OUTBOX_BYTES its
 * generations wait (conn_state says CONN_FULL), and if its socket takes nothing for --timeout it is cut: its
 * generations end at the next step and its slots free. A stalled reader holds only its own slots.
 *
 * Why poll() and one thread: POSIX (epoll is Linux's), and at --max_connections of a few thousand a pass over the
 * descriptors is microseconds beside a decode step that takes milliseconds.
 */
#define _GNU_SOURCE  // accept4, POLLRDHUP
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define DRAIN_MS 200            // after an answer: the client's leftover bytes are read and dropped this long
#define DRAIN_ERROR_MS 1000     // after a refused request: the client may still be sending its body
#define DRAIN_BYTES (MAX_BODY + HTTP_MAX_HEADER)
#define OUTBOX_LIMIT (MAX_TEXT_BYTES + 2 * OUTBOX_BYTES)  // a whole answer (MAX_TEXT_BYTES) on top of a full outbox

enum { READING, ANSWERING, DRAINING };

struct Conn {
    int fd;                  // -1 once closed: the struct lives on while a job holds it
    int phase;               // READING its request, ANSWERING (making or sending the answer), DRAINING before close
    long long deadline;      // READING: --timeout after accept; DRAINING: the end of the drain
    Buf in;                  // the request's bytes, head then body
    size_t scanned;          // bytes of in searched for the end of the head
    size_t head_len;         // the head's length once its end arrived, else 0
    HttpRequest req;
    int continued;           // "100 Continue" was sent
    int peer_eof;            // the client closed its side: nothing more to read
    int drain_ms;
    size_t drained;
    // shared with the generation thread, under the server's lock
    Buf out;                 // appended, not yet taken by this thread
    int complete;            // no more bytes will be appended: close once everything is sent
    int job;                 // a job holds this struct: it is freed only after conn_done
    int state;               // CONN_OPEN, CONN_GONE or CONN_TOO_SLOW (CONN_FULL is out's length)
    // this thread's own
    Buf sending;             // taken from out, sent from offset sent
    size_t sent;
    long long waiting_since; // when the socket last took bytes while some wait (0: nothing waits)
    short revents;           // what the last poll saw
};

typedef struct {
    Conn **conns;            // (n_conns,) every connection, open or held by a job
    int n_conns, cap_conns;
    int open;                // of them with a descriptor: at most --max_connections
    struct pollfd *fds;      // (2 + n_conns,) the wake pipe, the listener, then connections
    Conn **polled;           // (n_conns,) the connection of fds[2 + i]
    int spare_fd;            // a descriptor kept to answer 503 when the process runs out of them
} Loop;

// ----------------------------------------------------------------------------------------------------
// the outbox: both threads

static void wake_io(Server *s) {  // under the lock
    if (s->wake_pending) return;
    s->wake_pending = 1;
    char byte = 1;
    if (write(s->wake_fd, &byte, 1) < 0) s->wake_pending = 0;  // the pipe is full: this thread wakes anyway
}

void conn_send(Server *s, Conn *c, const void *data, size_t n) {
    pthread_mutex_lock(&s->lock);
    if (c->state == CONN_OPEN) {
        buf_append(&c->out, data, n);
        if (c->out.failed) c->state = CONN_GONE;  // past OUTBOX_LIMIT: the answer cannot be whole
        wake_io(s);
    }
    pthread_mutex_unlock(&s->lock);
}

int conn_state_locked(const Conn *c) {
    return c->state != CONN_OPEN ? c->state : c->out.len >= OUTBOX_BYTES ? CONN_FULL : CONN_OPEN;
}

int conn_state(Server *s, Conn *c) {
    pthread_mutex_lock(&s->lock);
    int state = conn_state_locked(c);
    pthread_mutex_unlock(&s->lock);
    return state;
}

void conn_done(Server *s, Conn *c) {
    pthread_mutex_lock(&s->lock);
    c->complete = 1;
    c->job = 0;
    wake_io(s);
    pthread_mutex_unlock(&s->lock);
}

// The client went away or was cut: a job's choices end at the next step (wake the generation thread, which may be
// waiting for this very client), nothing more is kept for it, and the descriptor closes now.
static void conn_drop(Server *s, Loop *l, Conn *c, int state) {
    pthread_mutex_lock(&s->lock);
    if (c->state == CONN_OPEN) c->state = state;
    c->complete |= !c->job;
    buf_free(&c->out);
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
    buf_free(&c->sending);
    buf_free(&c->in);
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
        l->open--;
    }
}

// ----------------------------------------------------------------------------------------------------
// routes

typedef void Serve(Server *s, Conn *c, const char *body, size_t len);

static void serve_page(Server *s, Conn *c, const char *body, size_t len) {
    (void)body, (void)len;
    if (!s->page) send_error(s, c, 404, "this server has no web page: its --ui file was not found at start", NULL, "not_found");
    else send_body(s, c, 200, "text/html; charset=utf-8", "Cache-Control: no-cache\r\n", s->page, s->page_len);
}

static void serve_health(Server *s, Conn *c, const char *body, size_t len) {
    (void)body, (void)len;
    send_body(s, c, 200, "application/json", "", "{\"status\":\"ok\"}\n", 16);
}

static void serve_metrics(Server *s, Conn *c, const char *body, size_t len) {
    (void)body, (void)len;
    Buf b;
    buf_init(&b, 1 << 16);
    metrics_text(s, &b);
    if (b.failed) send_error(s, c, 500, "the metrics did not fit in memory", NULL, "internal_error");
    else send_body(s, c, 200, "text/plain; version=0.0.4; charset=utf-8", "", b.data, b.len);
    buf_free(&b);
}

static void serve_models(Server *s, Conn *c, const char *body, size_t len) {
    (void)body, (void)len;
    Buf b;
    buf_init(&b, 1 << 16);
    buf_puts(&b, "{\"object\":\"list\",\"data\":[");
    model_object(&b, s);
    buf_puts(&b, "]}\n");
    send_json(s, c, &b);
    buf_free(&b);
}

static void serve_model(Server *s, Conn *c, const char *body, size_t len) {  // GET /v1/models/ALIAS
    (void)body, (void)len;
    Buf b;
    buf_init(&b, 1 << 16);
    model_object(&b, s);
    buf_puts(&b, "\n");
    send_json(s, c, &b);
    buf_free(&b);
}

static void serve_completion(Server *s, Conn *c, const char *body, size_t len) {
    Completion comp;
    char msg[256];
    Problem pb = {msg, sizeof msg, NULL};
    if (parse_completion(s, body, len, &comp, &pb) != 0) {
        fprintf(stderr, "POST /v1/completions 400: %s\n", msg);
        send_error(s, c, 400, msg, pb.param, "invalid_value");
        completion_free(&comp);
        metrics_request(s, OUTCOME_INVALID, 0, 0);
        return;
    }
    pthread_mutex_lock(&s->lock);
    c->job = 1;  // before the job exists: it may end (conn_done) before enqueue returns
    pthread_mutex_unlock(&s->lock);
    if (enqueue(s, c, &comp) != 0) {
        completion_free(&comp);
        pthread_mutex_lock(&s->lock);
        c->job = 0;
        pthread_mutex_unlock(&s->lock);
    }
}

static void serve_tokenize(Server *s, Conn *c, const char *body, size_t len) { tokenize(s, c, body, len, 0); }
static void serve_detokenize(Server *s, Conn *c, const char *body, size_t len) { tokenize(s, c, body, len, 1); }

static const struct {
    const char *path;      // "/v1/models/": the model's own path, /v1/models/ALIAS
    const char *method;
    int open;              // served without the API key
    Serve *serve;
} routes[] = {
    {"/", "GET", 1, serve_page},  // the page itself holds nothing: it asks for the key when the API answers 401
    {"/health", "GET", 1, serve_health},
    {"/metrics", "GET", 0, serve_metrics},
    {"/v1/models", "GET", 0, serve_models},
    {"/v1/models/", "GET", 0, serve_model},
    {"/v1/completions", "POST", 0, serve_completion},
    {"/tokenize", "POST", 0, serve_tokenize},
    {"/detokenize", "POST", 0, serve_detokenize},
};

static int route_of(const Server *s, const char *path) {
    for (int i = 0; i < (int)(sizeof routes / sizeof *routes); i++) {
        size_t n = strlen(routes[i].path);
        if (routes[i].path[n - 1] == '/' && n > 1) {  // the model's own path
            if (strncmp(path, routes[i].path, n) == 0 && strcmp(path + n, s->alias) == 0) return i;
        } else if (strcmp(path, routes[i].path) == 0) {
            return i;
        }
    }
    return -1;
}

int authorized(const char *api_key, const HttpRequest *req) {
    if (!api_key) return 1;
    const char *given = req->authorization;
    if (req->authorization_too_long || strncasecmp(given, "Bearer ", 7) != 0) given = "";
    else given += 7;
    size_t n = strlen(api_key), m = strlen(given);
    unsigned diff = n != m;  // the time depends on the server's key's length alone, never on where they differ
    for (size_t i = 0; i < n; i++) diff |= (unsigned char)api_key[i] ^ (unsigned char)(i < m ? given[i] : 0);
    return diff == 0;
}

// The request has arrived whole: its route answers, or queues a completion.
static void dispatch(Server *s, Conn *c) {
    const HttpRequest *req = &c->req;
    int route = route_of(s, req->path);
    c->phase = ANSWERING;
    c->drain_ms = DRAIN_MS;
    if (route < 0) {
        char msg[HTTP_MAX_PATH + 120];
        snprintf(msg, sizeof msg, "no such path: %s (try /v1/completions, /v1/models, /tokenize, /detokenize, /metrics, "
                 "/health, /)", req->path);
        send_error(s, c, 404, msg, NULL, "not_found");
    } else if (strcmp(req->method, routes[route].method) != 0) {
        char msg[HTTP_MAX_PATH + 32];
        snprintf(msg, sizeof msg, "use %s for %s", routes[route].method, routes[route].path);
        send_error(s, c, 405, msg, NULL, "method_not_allowed");
    } else if (!routes[route].open && !authorized(s->api_key, req)) {
        fprintf(stderr, "%s %s 401: no API key, or a wrong one\n", req->method, req->path);
        metrics_request(s, OUTCOME_UNAUTHORIZED, 0, 0);
        send_error(s, c, 401, "this server needs its API key: send the header Authorization: Bearer KEY", NULL,
                   "invalid_api_key");
    } else {
        routes[route].serve(s, c, c->in.data + c->head_len, req->content_length);
    }
    buf_free(&c->in);  // a completion copied what it needs
    pthread_mutex_lock(&s->lock);
    c->complete |= !c->job;
    pthread_mutex_unlock(&s->lock);
}

// ----------------------------------------------------------------------------------------------------
// reading, sending, closing

// A refused request: its error, then a longer drain (the client may be sending a body it was refused for).
static void refuse(Server *s, Conn *c, int status, const char *msg) {
    fprintf(stderr, "request refused, %d: %s\n", status, msg);
    c->phase = ANSWERING;
    c->drain_ms = DRAIN_ERROR_MS;
    send_error(s, c, status, msg, NULL, code_of_status(status));
    buf_free(&c->in);
    pthread_mutex_lock(&s->lock);
    c->complete = 1;
    pthread_mutex_unlock(&s->lock);
}

// What the request's bytes so far allow: wait for more, refuse, or dispatch.
static void advance_request(Server *s, Conn *c) {
    char msg[256];
    if (!c->head_len) {
        c->head_len = http_head_end(c->in.data, c->in.len, c->scanned);
        c->scanned = c->in.len;
        if (!c->head_len && c->in.len >= HTTP_MAX_HEADER) {
            refuse(s, c, 431, "the request line and headers exceed 8192 bytes");
            return;
        }
        if (!c->head_len) return;
        int status = http_parse_head(c->in.data, c->head_len, MAX_BODY, &c->req, msg, sizeof msg);
        if (status) {
            refuse(s, c, status, msg);
            return;
        }
    }
    if (c->in.len >= c->head_len + c->req.content_length) {
        c->in.len = c->head_len + c->req.content_length;  // bytes of a pipelined next request are dropped
        dispatch(s, c);
    } else if (c->req.expect_continue && !c->continued) {
        static const char go_on[] = "HTTP/1.1 100 Continue\r\n\r\n";
        c->continued = 1;
        conn_send(s, c, go_on, sizeof go_on - 1);
    }
}

// Room for n more bytes (and the NUL) in b, grown by doubling from 1 KiB: a connection that sends a few bytes of
// header holds a few bytes of memory. 0, or -1 out of memory.
static int reserve(Buf *b, size_t n) {
    if (b->len + n + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + n + 1) cap *= 2;
    char *grown = realloc(b->data, cap);
    if (!grown) return -1;
    b->data = grown;
    b->cap = cap;
    return 0;
}

static void on_readable(Server *s, Loop *l, Conn *c) {
    char sink[4096];
    if (c->phase != READING) {  // past the request: bytes are dropped; the end of the stream is a client gone
        ssize_t got = recv(c->fd, sink, sizeof sink, 0);
        if (got < 0 && (errno == EAGAIN || errno == EINTR)) return;
        if (got > 0 && c->phase == DRAINING && (c->drained += (size_t)got) < DRAIN_BYTES) return;
        if (got > 0 && c->phase == ANSWERING) return;
        pthread_mutex_lock(&s->lock);
        int job = c->job;
        pthread_mutex_unlock(&s->lock);
        if (job || c->phase == DRAINING || got < 0) conn_drop(s, l, c, CONN_GONE);
        else c->peer_eof = 1;  // a client that half-closed after its request still reads the answer
        return;
    }
    size_t want = c->head_len ? c->head_len + c->req.content_length - c->in.len : HTTP_MAX_HEADER - c->in.len;
    if (want > 65536) want = 65536;
    ssize_t got = reserve(&c->in, want) != 0 ? -1 : recv(c->fd, c->in.data + c->in.len, want, 0);
    if (got < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (got < 0 || (got == 0 && c->in.len == 0)) {  // reset, or closed before sending anything
        conn_drop(s, l, c, CONN_GONE);
        return;
    }
    if (got == 0) {
        c->peer_eof = 1;
        refuse(s, c, 400, c->head_len ? "the request body is shorter than its Content-Length"
                                      : "the request ended before its headers did");
        return;
    }
    c->in.len += (size_t)got;
    c->in.data[c->in.len] = '\0';
    advance_request(s, c);
}

// Sends what the socket takes: the batch in hand, then the outbox's next. A client past --timeout without taking a
// byte is cut.
static void flush(Server *s, Loop *l, Conn *c, long long now) {
    for (;;) {
        if (c->sent == c->sending.len) {
            c->sending.len = c->sent = 0;
            pthread_mutex_lock(&s->lock);
            if (c->out.len >= OUTBOX_BYTES) pthread_cond_broadcast(&s->changed);  // its generations may go on
            Buf taken = c->out;
            c->out = c->sending;
            c->sending = taken;
            // an idle connection keeps no large buffer; under the lock, as conn_send may be appending to it now
            if (c->sending.len == 0 && c->out.cap > (64 << 10)) buf_free(&c->out);
            pthread_mutex_unlock(&s->lock);
            if (c->sending.len == 0) {
                c->waiting_since = 0;
                return;
            }
            if (!c->waiting_since) c->waiting_since = now;
        }
        ssize_t n = send(c->fd, c->sending.data + c->sent, c->sending.len - c->sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n <= 0) {
            conn_drop(s, l, c, CONN_GONE);
            return;
        }
        c->sent += (size_t)n;
        c->waiting_since = now;
    }
}

// Closes, drains or cuts what is due. 1 when the struct was freed.
static int tend(Server *s, Loop *l, Conn *c, long long now) {
    pthread_mutex_lock(&s->lock);
    int complete = c->complete, job = c->job, unsent = c->out.len > 0;
    pthread_mutex_unlock(&s->lock);
    unsent |= c->sent < c->sending.len;
    if (c->fd >= 0 && c->phase == READING && now >= c->deadline) {
        if (c->in.len) refuse(s, c, 408, "the request did not arrive in time");
        else conn_drop(s, l, c, CONN_GONE);  // an idle connection that never spoke: closed without a word
    } else if (c->fd >= 0 && unsent && c->waiting_since && now - c->waiting_since >= s->timeout_ms) {
        fprintf(stderr, "client too slow: it took no bytes for %d s; cut with its answer unsent\n", s->timeout_ms / 1000);
        conn_drop(s, l, c, CONN_TOO_SLOW);
    } else if (c->fd >= 0 && c->phase == ANSWERING && complete && !unsent) {
        c->phase = DRAINING;
        c->deadline = now + c->drain_ms;
        shutdown(c->fd, SHUT_WR);
        if (c->peer_eof) conn_drop(s, l, c, CONN_GONE);
    } else if (c->fd >= 0 && c->phase == DRAINING && now >= c->deadline) {
        conn_drop(s, l, c, CONN_GONE);
    }
    if (c->fd >= 0 || job) return 0;
    pthread_mutex_lock(&s->lock);  // a job may still be between its last conn_send and conn_done
    int held = c->job;
    pthread_mutex_unlock(&s->lock);
    if (held) return 0;
    buf_free(&c->in);
    buf_free(&c->out);
    buf_free(&c->sending);
    free(c);
    return 1;
}

// ----------------------------------------------------------------------------------------------------
// accepting

// Answers 503 on a connection past the limit and closes it: its request (if it came already) is read and dropped
// first, so that the close does not reset the answer.
static void turn_away(int fd) {
    static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 103"
                               "\r\nConnection: close\r\n\r\n{\"error\":{\"message\":\"too many connections: try again "
                               "later\",\"type\":\"server_error\",\"param\":null,\"code\":\"server_busy\"}}\n";
    char sink[4096];
    for (int i = 0; i < 16 && recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0; i++) {}
    if (send(fd, busy, sizeof busy - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {}
    shutdown(fd, SHUT_WR);
    close(fd);
}

static void accept_all(Server *s, Loop *l, int listener, long long now) {
    for (;;) {
        int fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0 && (errno == EMFILE || errno == ENFILE) && l->spare_fd >= 0) {
            close(l->spare_fd);  // out of descriptors: use the spare one to say so
            fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (fd >= 0) turn_away(fd);
            l->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
            return;
        }
        if (fd < 0) return;  // none waiting, or the client gave up already
        Conn *c = l->open < s->max_connections ? calloc(1, sizeof *c) : NULL;
        if (c && l->n_conns == l->cap_conns) {
            int cap = l->cap_conns ? 2 * l->cap_conns : 64;
            Conn **conns = realloc(l->conns, (size_t)cap * sizeof *conns), **polled = realloc(l->polled, (size_t)cap * sizeof *polled);
            struct pollfd *fds = realloc(l->fds, (size_t)(cap + 2) * sizeof *fds);
            if (conns) l->conns = conns;
            if (polled) l->polled = polled;
            if (fds) l->fds = fds;
            if (conns && polled && fds) l->cap_conns = cap;
        }
        if (!c || l->n_conns == l->cap_conns) {
            free(c);
            turn_away(fd);
            continue;
        }
        int one = 1, send_buffer = OUTBOX_BYTES;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // streamed pieces leave at once
        // the kernel's buffer bounded too (Linux doubles it): by default it grows to 4 MiB per connection, which a
        // client that reads nothing would hold, and which would hide for a long time that it reads nothing
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &send_buffer, sizeof send_buffer);
        c->fd = fd;
        c->phase = READING;
        c->deadline = now + s->timeout_ms;
        buf_init(&c->in, HTTP_MAX_HEADER + MAX_BODY + 1);
        buf_init(&c->out, OUTBOX_LIMIT);
        buf_init(&c->sending, OUTBOX_LIMIT);
        l->conns[l->n_conns++] = c;
        l->open++;
    }
}

// ----------------------------------------------------------------------------------------------------
// the loop

// The descriptors to watch, and how long poll may sleep: until the nearest deadline.
static int gather_polls(Server *s, Loop *l, int listener, int wake_fd, long long now, int *timeout_ms) {
    int n = 0;
    l->fds[n++] = (struct pollfd){wake_fd, POLLIN, 0};
    l->fds[n++] = (struct pollfd){listener, POLLIN, 0};  // -1 once closed: poll skips it
    long long next = now + 250;  // and look at stop_requested now and then
    pthread_mutex_lock(&s->lock);
    for (int i = 0; i < l->n_conns; i++) {
        Conn *c = l->conns[i];
        c->revents = 0;
        if (c->fd < 0) continue;
        short events = (c->peer_eof ? 0 : POLLIN) | (c->sent < c->sending.len ? POLLOUT : 0);
        l->polled[n - 2] = c;
        l->fds[n++] = (struct pollfd){c->fd, events, 0};
        if (c->phase != ANSWERING && c->deadline < next) next = c->deadline;
        if (c->waiting_since && c->waiting_since + s->timeout_ms < next) next = c->waiting_since + s->timeout_ms;
    }
    s->metrics.connections = l->open;
    pthread_mutex_unlock(&s->lock);
    *timeout_ms = next > now ? (int)(next - now) : 0;
    return n;
}

static void loop_free(Loop *l) {
    for (int i = 0; i < l->n_conns; i++) {
        if (l->conns[i]->fd >= 0) close(l->conns[i]->fd);
        buf_free(&l->conns[i]->in);
        buf_free(&l->conns[i]->out);
        buf_free(&l->conns[i]->sending);
        free(l->conns[i]);
    }
    free(l->conns);
    free(l->fds);
    free(l->polled);
    if (l->spare_fd >= 0) close(l->spare_fd);
}

void serve_connections(Server *s, int listener, int wake_read_fd, pthread_t generator) {
    Loop l = {.spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC)};
    l.fds = malloc(2 * sizeof *l.fds);
    long long stop_deadline = 0;
    for (;;) {
        long long now = now_ms();
        if (stop_requested && listener >= 0) {
            fprintf(stderr, "gpt-server: stopping: no new connections, queued requests get 503, the ones in flight are cut\n");
            close(listener);
            listener = -1;
            stop_deadline = now + s->timeout_ms + 2000;  // what is not sent by then is dropped
            pthread_mutex_lock(&s->lock);
            pthread_cond_broadcast(&s->changed);
            pthread_mutex_unlock(&s->lock);
        }
        if (listener < 0 && (l.n_conns == 0 || now >= stop_deadline)) break;
        int timeout, n = gather_polls(s, &l, listener, wake_read_fd, now, &timeout);
        if (!l.fds || poll(l.fds, (nfds_t)n, timeout) < 0) continue;  // EINTR: a signal
        now = now_ms();
        if (l.fds[0].revents) {
            char drain[256];
            while (read(wake_read_fd, drain, sizeof drain) > 0) {}
            pthread_mutex_lock(&s->lock);
            s->wake_pending = 0;
            pthread_mutex_unlock(&s->lock);
        }
        for (int i = 2; i < n; i++) {
            Conn *c = l.polled[i - 2];
            c->revents = l.fds[i].revents;
            if (c->fd >= 0 && (c->revents & (POLLIN | POLLHUP | POLLERR))) on_readable(s, &l, c);
        }
        if (listener >= 0 && (l.fds[1].revents & POLLIN)) accept_all(s, &l, listener, now);
        for (int i = 0; i < l.n_conns;) {
            Conn *c = l.conns[i];
            if (c->fd >= 0 && (c->sent == c->sending.len || (c->revents & POLLOUT))) flush(s, &l, c, now);
            if (tend(s, &l, c, now)) l.conns[i] = l.conns[--l.n_conns];
            else i++;
        }
    }
    for (int i = 0; i < l.n_conns; i++) conn_drop(s, &l, l.conns[i], CONN_GONE);  // jobs still running end now
    pthread_join(generator, NULL);
    loop_free(&l);
}
