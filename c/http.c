/*
 * http.c: see http.h. Every length the client sends is checked against a limit before it is used.
 */
#define _GNU_SOURCE
#include "http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

size_t http_head_end(const char *buf, size_t n, size_t from) {
    for (size_t i = from > 3 ? from - 3 : 0; i + 1 < n; i++) {  // the blank line may straddle two reads
        if (buf[i] != '\n') continue;
        if (buf[i + 1] == '\n') return i + 2;
        if (buf[i + 1] == '\r' && i + 2 < n && buf[i + 2] == '\n') return i + 3;
    }
    return 0;
}

static int fail(char *msg, size_t msg_size, int status, const char *text) {
    snprintf(msg, msg_size, "%s", text);
    return status;
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

// METHOD SP target SP HTTP/1.x into req; 0 or the status of the problem.
static int parse_request_line(char *line, HttpRequest *req, char *msg, size_t msg_size) {
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
    return 0;
}

// A Content-Length value: digits only, at most 18 of them. -1 when malformed, -2 when too long.
static long long content_length_of(const char *value, size_t len) {
    if (len == 0) return -1;
    if (len > 18) return -2;
    long long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (value[i] < '0' || value[i] > '9') return -1;
        v = v * 10 + (value[i] - '0');
    }
    return v;
}

int http_parse_head(const char *buf, size_t head_len, size_t max_body, HttpRequest *req, char *msg, size_t msg_size) {
    memset(req, 0, sizeof *req);
    if (head_len > HTTP_MAX_HEADER) return fail(msg, msg_size, 431, "the request line and headers exceed 8192 bytes");
    if (memchr(buf, '\0', head_len)) return fail(msg, msg_size, 400, "NUL byte in the request headers");
    char head[HTTP_MAX_HEADER + 1];
    memcpy(head, buf, head_len);
    head[head_len] = '\0';
    char *p = head, *end = head + head_len;
    int status = parse_request_line(next_line(&p, end), req, msg, msg_size);
    if (status) return status;

    long long content_length = -1;
    int chunked = 0;
    char *line;
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
            long long v = content_length_of(value, vlen);
            if (v < 0) return fail(msg, msg_size, v == -2 ? 413 : 400, "bad Content-Length");
            if (content_length >= 0 && content_length != v) return fail(msg, msg_size, 400, "conflicting Content-Length headers");
            content_length = v;
        } else if (strcasecmp(line, "Transfer-Encoding") == 0) {
            chunked = 1;
        } else if (strcasecmp(line, "Expect") == 0) {
            if (strcasecmp(value, "100-continue") != 0) return fail(msg, msg_size, 417, "unsupported Expect header");
            req->expect_continue = 1;
        } else if (strcasecmp(line, "Authorization") == 0) {
            req->authorization_too_long = vlen >= sizeof req->authorization;
            if (!req->authorization_too_long) memcpy(req->authorization, value, vlen + 1);
        }
    }
    if (chunked) return fail(msg, msg_size, 411, "chunked request bodies are not accepted: send Content-Length");
    if (content_length < 0) {
        if (strcmp(req->method, "POST") == 0) return fail(msg, msg_size, 411, "a request body needs a Content-Length header");
        content_length = 0;
    }
    if ((unsigned long long)content_length > max_body) {
        snprintf(msg, msg_size, "the request body is %lld bytes; the limit is %zu", content_length, max_body);
        return 413;
    }
    req->content_length = (size_t)content_length;
    return 0;
}

const char *http_reason(int status) {
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
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

int http_response_head(char *out, size_t size, int status, const char *content_type, const char *extra_headers,
                       long long content_length) {
    char length[48] = "";
    if (content_length >= 0) snprintf(length, sizeof length, "Content-Length: %lld\r\n", content_length);
    int n = snprintf(out, size, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n%sConnection: close\r\n%s\r\n", status,
                     http_reason(status), content_type, length, extra_headers);
    return n < 0 || (size_t)n >= size ? -1 : n;
}
