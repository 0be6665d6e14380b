/*
 * http.c: see http.h. Every read goes through poll() with what is left of the request's deadline, and
 * every length the client sends is checked against a limit before it is used.
 */
#define _GNU_SOURCE  // POLLRDHUP, MSG_NOSIGNAL
#include "http.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

// Up to n bytes before the deadline: the count, 0 at the peer's end of stream, -1 on error, -2 on timeout.
static ssize_t read_some(int fd, char *dst, size_t n, long long deadline) {
    for (;;) {
        long long left = deadline - now_ms();
        if (left <= 0) return -2;
        struct pollfd p = {fd, POLLIN, 0};
        int r = poll(&p, 1, (int)left);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        if (r == 0) return -2;
        ssize_t got = recv(fd, dst, n, 0);
        if (got < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
        return got;
    }
}

static int fail(char *msg, size_t msg_size, int status, const char *text) {
    snprintf(msg, msg_size, "%s", text);
    return status;
}

static char *find_header_end(char *buf, size_t n, size_t *body_start) {
    for (size_t i = 0; i + 1 < n; i++) {
        if (buf[i] != '\n') continue;
        if (buf[i + 1] == '\n') { *body_start = i + 2; return buf + i; }
        if (buf[i + 1] == '\r' && i + 2 < n && buf[i + 2] == '\n') { *body_start = i + 3; return buf + i; }
    }
    return NULL;
}

// The next line of the header block in [*p, end), without its \r\n; NULL at the end.
static char *next_line(char **p, char *end) {
    if (*p >= end) return NULL;
    char *line = *p, *nl = memchr(line, '\n', (size_t)(end - line));
    char *stop = nl ? nl : end;
    *p = nl ? nl + 1 : end;
    if (stop > line && stop[-1] == '\r') stop--;
    *stop = '\0';
    return line;
}

int http_read_request(int fd, HttpRequest *req, size_t max_body, int total_timeout_ms, char *msg, size_t msg_size) {
    memset(req, 0, sizeof *req);
    long long deadline = now_ms() + total_timeout_ms;
    char head[HTTP_MAX_HEADER + 1];
    size_t n = 0, body_start = 0;
    char *head_end = NULL;
    while (!head_end) {
        if (n >= HTTP_MAX_HEADER)
            return fail(msg, msg_size, 431, "the request line and headers exceed " "8192 bytes");
        ssize_t got = read_some(fd, head + n, HTTP_MAX_HEADER - n, deadline);
        if (got == -2) return fail(msg, msg_size, n ? 408 : -1, "the request did not arrive in time");
        if (got <= 0) return fail(msg, msg_size, n ? 400 : -1, "the request ended before its headers did");
        size_t from = n > 3 ? n - 3 : 0;  // the blank line may straddle two reads
        n += (size_t)got;
        head_end = find_header_end(head + from, n - from, &body_start);
        if (head_end) body_start += from;
    }
    head[n] = '\0';
    char *p = head, *end = head + body_start;
    for (char *q = head; q < end; q++)
        if (*q == '\0') return fail(msg, msg_size, 400, "NUL byte in the request headers");

    // request line: METHOD SP target SP HTTP/1.x
    char *line = next_line(&p, end);
    char *sp1 = line ? strchr(line, ' ') : NULL, *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (!sp1 || !sp2 || strchr(sp2 + 1, ' ')) return fail(msg, msg_size, 400, "malformed request line");
    size_t method_len = (size_t)(sp1 - line), target_len = (size_t)(sp2 - sp1 - 1);
    if (method_len == 0 || method_len >= sizeof req->method) return fail(msg, msg_size, 400, "malformed method");
    for (size_t i = 0; i < method_len; i++)
        if (line[i] < 'A' || line[i] > 'Z') return fail(msg, msg_size, 400, "malformed method");
    if (strcmp(sp2 + 1, "HTTP/1.1") != 0 && strcmp(sp2 + 1, "HTTP/1.0") != 0)
        return fail(msg, msg_size, 400, "only HTTP/1.0 and HTTP/1.1 are served");
    if (target_len == 0 || sp1[1] != '/') return fail(msg, msg_size, 400, "the request target must start with /");
    char *query = memchr(sp1 + 1, '?', target_len);
    size_t path_len = query ? (size_t)(query - sp1 - 1) : target_len;
    if (path_len >= sizeof req->path) return fail(msg, msg_size, 414, "the request path is too long");
    memcpy(req->method, line, method_len);
    memcpy(req->path, sp1 + 1, path_len);

    // headers: only the framing ones matter here
    long long content_length = -1;
    int expect_continue = 0, chunked = 0;
    while ((line = next_line(&p, end)) && *line) {
        if (*line == ' ' || *line == '\t') return fail(msg, msg_size, 400, "folded header lines are not accepted");
        char *colon = strchr(line, ':');
        if (!colon || colon == line) return fail(msg, msg_size, 400, "malformed header line");
        *colon = '\0';
        char *value = colon + 1;
        while (*value == ' ' || *value == '\t') value++;
        size_t vlen = strlen(value);
        while (vlen && (value[vlen - 1] == ' ' || value[vlen - 1] == '\t')) value[--vlen] = '\0';
        if (strcasecmp(line, "Content-Length") == 0) {
            if (vlen == 0 || vlen > 18) return fail(msg, msg_size, vlen > 18 ? 413 : 400, "bad Content-Length");
            long long v = 0;
            for (size_t i = 0; i < vlen; i++) {
                if (value[i] < '0' || value[i] > '9') return fail(msg, msg_size, 400, "bad Content-Length");
                v = v * 10 + (value[i] - '0');
            }
            if (content_length >= 0 && content_length != v) return fail(msg, msg_size, 400, "conflicting Content-Length headers");
            content_length = v;
        } else if (strcasecmp(line, "Transfer-Encoding") == 0) {
            chunked = 1;
        } else if (strcasecmp(line, "Expect") == 0) {
            if (strcasecmp(value, "100-continue") != 0) return fail(msg, msg_size, 417, "unsupported Expect header");
            expect_continue = 1;
        }
    }
    if (chunked) return fail(msg, msg_size, 411, "chunked request bodies are not accepted: send Content-Length");
    if (content_length < 0) {
        if (strcmp(req->method, "POST") == 0)
            return fail(msg, msg_size, 411, "a request body needs a Content-Length header");
        content_length = 0;
    }
    if ((unsigned long long)content_length > max_body) {
        snprintf(msg, msg_size, "the request body is %lld bytes; the limit is %zu", content_length, max_body);
        return 413;
    }
    if (content_length == 0) return 0;

    size_t want = (size_t)content_length, have = n - body_start;
    if (have > want) have = want;  // bytes of a pipelined next request are dropped with the connection
    req->body = malloc(want + 1);
    if (!req->body) return fail(msg, msg_size, 503, "out of memory");
    memcpy(req->body, head + body_start, have);
    if (expect_continue && have < want) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (http_send_all(fd, cont, sizeof cont - 1) != 0) return fail(msg, msg_size, -1, "client went away");
    }
    while (have < want) {
        ssize_t got = read_some(fd, req->body + have, want - have, deadline);
        if (got == -2) return fail(msg, msg_size, 408, "the request body did not arrive in time");
        if (got <= 0) return fail(msg, msg_size, 400, "the request body is shorter than its Content-Length");
        have += (size_t)got;
    }
    req->body[want] = '\0';
    req->body_len = want;
    return 0;
}

void http_request_free(HttpRequest *req) {
    free(req->body);
    req->body = NULL;
}

int http_send_all(int fd, const void *data, size_t n) {
    const char *p = data;
    while (n > 0) {
        ssize_t sent = send(fd, p, n, MSG_NOSIGNAL);
        if (sent < 0 && errno == EINTR) continue;
        if (sent <= 0) return -1;  // EPIPE, ECONNRESET, or the send timeout (EAGAIN)
        p += sent;
        n -= (size_t)sent;
    }
    return 0;
}

const char *http_reason(int status) {
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 417: return "Expectation Failed";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    }
    return "Error";
}

int http_send(int fd, int status, const char *content_type, const char *extra_headers, const char *body, size_t len) {
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n%s\r\n",
                     status, http_reason(status), content_type, len, extra_headers);
    if (n < 0 || (size_t)n >= sizeof head) return -1;
    if (http_send_all(fd, head, (size_t)n) != 0) return -1;
    return http_send_all(fd, body, len);
}

int http_peer_closed(int fd) {
    struct pollfd p = {fd, POLLIN | POLLRDHUP, 0};
    if (poll(&p, 1, 0) <= 0) return 0;
    if (p.revents & (POLLERR | POLLHUP | POLLRDHUP | POLLNVAL)) return 1;
    // readable: more bytes after the request (ignored), or the end of the stream
    char c;
    ssize_t r = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

void http_close(int fd, size_t max_bytes, int timeout_ms) {
    shutdown(fd, SHUT_WR);
    long long deadline = now_ms() + timeout_ms;
    char sink[4096];
    size_t dropped = 0;
    while (dropped < max_bytes) {
        ssize_t got = read_some(fd, sink, sizeof sink, deadline);
        if (got <= 0) break;
        dropped += (size_t)got;
    }
    close(fd);
}
