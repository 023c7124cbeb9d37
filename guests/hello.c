/* hello: the smallest guest. Prints one line to /dev/stdout. */
#include <stdio.h>

int main(void)
{
    puts("Hello, World!");
    return 0;
}
