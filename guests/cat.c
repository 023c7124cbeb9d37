/* cat: copy each input (a channel path, or /dev/stdin when none is given) to
 * /dev/stdout with plain read()/write() calls, so that every call is one
 * channel "get" or "put" and the quota arithmetic is easy to follow.
 *
 *   cat [-b BYTES] [PATH...]    -b sets the size of each read (default 1 MiB)
 *
 * Exit codes: 0 ok, 1 an input could not be opened, read or written.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int copy(int fd, const char *name, char *buf, size_t size)
{
    for (;;) {
        ssize_t n = read(fd, buf, size);
        if (n == 0)
            return 0;
        if (n < 0) {
            fprintf(stderr, "cat: read %s: %s\n", name, strerror(errno));
            return 1;
        }
        for (ssize_t done = 0; done < n;) {
            ssize_t w = write(1, buf + done, (size_t)(n - done));
            if (w < 0) {
                fprintf(stderr, "cat: write /dev/stdout: %s\n", strerror(errno));
                return 1;
            }
            done += w;
        }
    }
}

int main(int argc, char **argv)
{
    size_t size = 1 << 20;
    int first = 1;
    if (argc > 2 && strcmp(argv[1], "-b") == 0) {
        size = (size_t)strtoul(argv[2], NULL, 10);
        if (size == 0)
            size = 1;
        first = 3;
    }
    char *buf = malloc(size);
    if (buf == NULL) {
        fprintf(stderr, "cat: no memory for a %zu byte buffer\n", size);
        return 1;
    }
    if (first >= argc)
        return copy(0, "/dev/stdin", buf, size);
    int rc = 0;
    for (int i = first; i < argc; i++) {
        int fd = open(argv[i], O_RDONLY);
        if (fd < 0) {
            fprintf(stderr, "cat: open %s: %s\n", argv[i], strerror(errno));
            rc = 1;
            continue;
        }
        rc |= copy(fd, argv[i], buf, size);
        close(fd);
    }
    return rc;
}
