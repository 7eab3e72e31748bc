/* har_keyfile_posix.c - loading key files from a POSIX file system. */
#define _POSIX_C_SOURCE 200809L
#include "har_keyfile.h"

#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int har_keyfile_load(const char *path, const har_crypto *c, har_keyfile *out)
{
    char text[1024];
    size_t len = 0;
    struct stat st;
    int fd = open(path, O_RDONLY), rc;
    if (fd < 0)
        return HAR_KEYFILE_IO;
    if (fstat(fd, &st) < 0) {
        close(fd);
        return HAR_KEYFILE_IO;
    }
    for (;;) {
        ssize_t n = read(fd, text + len, sizeof text - len);
        if (n < 0) {
            close(fd);
            return HAR_KEYFILE_IO;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len == sizeof text) { /* far larger than any key file */
            close(fd);
            return HAR_KEYFILE_SYNTAX;
        }
    }
    close(fd);
    rc = har_keyfile_parse(text, len, c, out);
    if (rc == HAR_KEYFILE_OK && out->has_secret && (st.st_mode & (S_IRGRP | S_IROTH))) {
        memset(out, 0, sizeof *out);
        return HAR_KEYFILE_PERMISSIONS;
    }
    memset(text, 0, sizeof text);
    return rc;
}
