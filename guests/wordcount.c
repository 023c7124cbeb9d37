/* wordcount: count words, in the two halves of a MapReduce job.
 *
 *   wordcount [PATH...]      map: count the words of the inputs (/dev/stdin when
 *                            none) and print "word count" lines, sorted by word
 *   wordcount -r [PATH...]   reduce: read "word count" lines from the inputs
 *                            (every /dev/in* channel when no path is given) and
 *                            print the merged sums in the same format
 *
 * A word is a run of ASCII letters, digits and apostrophes, lowercased; so the
 * reducer's output can itself be reduced again (the format is closed).
 * Exit codes: 0 ok, 1 an input failed (open/read/quota), 2 bad usage or input.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct entry { char *word; unsigned long long count; };

static struct entry *table;
static size_t capacity, used;

static unsigned long hash(const char *s, size_t n)
{
    unsigned long h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static void grow(void);

static void add(const char *word, size_t n, unsigned long long count)
{
    if (used * 10 >= capacity * 7)
        grow();
    size_t i = hash(word, n) & (capacity - 1);
    while (table[i].word) {
        if (strncmp(table[i].word, word, n) == 0 && table[i].word[n] == '\0') {
            table[i].count += count;
            return;
        }
        i = (i + 1) & (capacity - 1);
    }
    table[i].word = strndup(word, n);
    table[i].count = count;
    used++;
}

static void grow(void)
{
    struct entry *old = table;
    size_t old_capacity = capacity;
    capacity = capacity ? capacity * 2 : 1024;
    table = calloc(capacity, sizeof *table);
    if (table == NULL) {
        fprintf(stderr, "wordcount: out of memory\n");
        exit(1);
    }
    used = 0;
    for (size_t i = 0; i < old_capacity; i++)
        if (old[i].word) {
            add(old[i].word, strlen(old[i].word), old[i].count);
            free(old[i].word);
        }
    free(old);
}

static int by_word(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;
    return strcmp(x->word, y->word);
}

/* byte -> lowercased word character, or 0 for a separator: one table lookup
 * per byte instead of isalnum()+tolower() calls (this loop is the hot path) */
static unsigned char word_char[256];

static void init_word_chars(void)
{
    for (int c = 0; c < 256; c++)
        word_char[c] = (c < 128 && (isalnum(c) || c == '\'')) ? (unsigned char)tolower(c) : 0;
}

/* map: scan raw bytes; words may straddle read boundaries */
static int map_fd(int fd, const char *name)
{
    static char buf[1 << 20];
    char word[256];
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) {
            fprintf(stderr, "wordcount: read %s: %s\n", name, strerror(errno));
            return 1;
        }
        if (n == 0)
            break;
        for (ssize_t i = 0; i < n; i++) {
            unsigned char c = word_char[(unsigned char)buf[i]];
            if (c) {
                if (len < sizeof word)   /* longer words are cut, not split */
                    word[len++] = (char)c;
            } else if (len) {
                add(word, len, 1);
                len = 0;
            }
        }
    }
    if (len)
        add(word, len, 1);
    return 0;
}

static int reduce_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "wordcount: open %s: %s\n", path, strerror(errno));
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    unsigned long lineno = 0;
    while ((n = getline(&line, &cap, f)) > 0) {
        lineno++;
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (n == 0)
            continue;
        char *space = strrchr(line, ' ');
        char *end = NULL;
        unsigned long long count = space ? strtoull(space + 1, &end, 10) : 0;
        if (space == NULL || space == line || end == space + 1 || *end != '\0') {
            fprintf(stderr, "wordcount: %s line %lu: expected 'word count'\n", path, lineno);
            rc = 2;
            continue;
        }
        add(line, (size_t)(space - line), count);
    }
    if (ferror(f)) {
        fprintf(stderr, "wordcount: read %s: %s\n", path, strerror(errno));
        rc = 1;
    }
    free(line);
    fclose(f);
    return rc;
}

static int by_string(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* every channel named /dev/in* (in1, in2, ... from the mappers), sorted */
static int reduce_all_inputs(void)
{
    DIR *d = opendir("/dev");
    if (d == NULL) {
        fprintf(stderr, "wordcount: opendir /dev: %s\n", strerror(errno));
        return 1;
    }
    char **names = NULL;
    size_t count = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "in", 2) != 0)
            continue;
        names = realloc(names, (count + 1) * sizeof *names);
        names[count] = malloc(strlen(e->d_name) + 6);
        sprintf(names[count], "/dev/%s", e->d_name);
        count++;
    }
    closedir(d);
    if (count == 0) {
        fprintf(stderr, "wordcount: no /dev/in* channels to reduce\n");
        return 2;
    }
    qsort(names, count, sizeof *names, by_string);
    int rc = 0;
    for (size_t i = 0; i < count; i++)
        rc |= reduce_file(names[i]);
    return rc;
}

int main(int argc, char **argv)
{
    int reduce = argc > 1 && strcmp(argv[1], "-r") == 0;
    int first = reduce ? 2 : 1;
    int rc = 0;
    init_word_chars();
    grow();
    if (reduce && first >= argc)
        rc = reduce_all_inputs();
    else if (first >= argc)
        rc = map_fd(0, "/dev/stdin");
    for (int i = first; i < argc; i++) {
        if (reduce) {
            rc |= reduce_file(argv[i]);
            continue;
        }
        int fd = open(argv[i], O_RDONLY);
        if (fd < 0) {
            fprintf(stderr, "wordcount: open %s: %s\n", argv[i], strerror(errno));
            rc |= 1;
            continue;
        }
        rc |= map_fd(fd, argv[i]);
        close(fd);
    }
    struct entry *sorted = malloc((used ? used : 1) * sizeof *sorted);
    size_t k = 0;
    for (size_t i = 0; i < capacity; i++)
        if (table[i].word)
            sorted[k++] = table[i];
    qsort(sorted, k, sizeof *sorted, by_word);
    for (size_t i = 0; i < k; i++)
        printf("%s %llu\n", sorted[i].word, sorted[i].count);
    return rc;
}
