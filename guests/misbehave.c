/* misbehave: a guest that tries to leave its sandbox, one way per mode.
 *
 *   misbehave open [PATH]   open a path the manifest does not declare (/etc/passwd)
 *   misbehave fd [N]        write to a descriptor nobody opened (7)
 *   misbehave create [PATH] create a file (/tmp/escaped)
 *   misbehave loop          spin forever (the Timeout must stop it)
 *   misbehave alloc         allocate 1 MiB blocks until refused (the Memory cap)
 *   misbehave crash         execute a trap instruction
 *   misbehave exit N        exit with code N
 *
 * When the sandbox refuses, it prints "contained: ..." and exits 0 (open, fd,
 * create) or 12 (alloc: out of memory, as a C program would).  If an escape
 * attempt succeeds it prints "ESCAPED" and exits 99, which tests treat as failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int try_open(const char *path, int flags)
{
    int fd = open(path, flags, 0644);
    if (fd < 0) {
        printf("contained: open(%s): %s\n", path, strerror(errno));
        return 0;
    }
    printf("ESCAPED: opened %s as fd %d\n", path, fd);
    return 99;
}

/* Blocks are chained so the compiler cannot prove them unused and drop the malloc. */
static void *volatile chain;

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "open";
    const char *arg = argc > 2 ? argv[2] : NULL;

    if (strcmp(mode, "open") == 0)
        return try_open(arg ? arg : "/etc/passwd", O_RDONLY);
    if (strcmp(mode, "create") == 0)
        return try_open(arg ? arg : "/tmp/escaped", O_WRONLY | O_CREAT | O_TRUNC);
    if (strcmp(mode, "fd") == 0) {
        int fd = arg ? atoi(arg) : 7;
        if (write(fd, "x", 1) < 0) {
            printf("contained: write(fd %d): %s\n", fd, strerror(errno));
            return 0;
        }
        printf("ESCAPED: wrote to fd %d\n", fd);
        return 99;
    }
    if (strcmp(mode, "loop") == 0) {
        volatile unsigned long spins = 0;
        for (;;)
            spins++;
    }
    if (strcmp(mode, "alloc") == 0) {
        size_t mib = 0;
        for (;;) {
            char *p = malloc(1 << 20);
            if (p == NULL) {
                printf("contained: malloc refused after %zu MiB\n", mib);
                return 12;
            }
            memset(p, 0xab, 1 << 20);  /* touch it: really use the memory */
            *(void **)p = chain;
            chain = p;
            mib++;
        }
    }
    if (strcmp(mode, "crash") == 0)
        __builtin_trap();
    if (strcmp(mode, "exit") == 0)
        return arg ? atoi(arg) : 3;
    fprintf(stderr, "misbehave: unknown mode %s\n", mode);
    return 2;
}
