/* Test workload: burns CPU in a function with a known name, or sleeps in nanosleep.
 *   workload burn SECONDS   (seconds of CPU time, so a loaded machine still gets the samples)
 *   workload deep SECONDS   (the same, one call deeper: main, outer, caller, hot function)
 *   workload signal SECONDS (the same, from a signal handler: the walk meets the signal frame)
 *   workload sleep SECONDS MILLIS_PER_SLEEP
 * Built twice by the tests: with frame pointers (and DWARF) and without. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double clock_seconds(clockid_t clock)
{
	struct timespec ts;
	clock_gettime(clock, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) unsigned long oxeye_test_hot_function(unsigned long rounds)
{
	unsigned long x = 0x9e3779b97f4a7c15ul;
	for (unsigned long i = 0; i < rounds; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
	}
	return x;
}

__attribute__((noinline)) unsigned long oxeye_test_caller(unsigned long rounds)
{
	return oxeye_test_hot_function(rounds) + 1;
}

__attribute__((noinline)) unsigned long oxeye_test_outer(unsigned long rounds)
{
	return oxeye_test_caller(rounds) * 3;
}

static double burn_seconds;
static volatile unsigned long signal_sink;

__attribute__((noinline)) void oxeye_test_signal_handler(int sig)
{
	double end = clock_seconds(CLOCK_PROCESS_CPUTIME_ID) + burn_seconds;

	(void)sig;
	while (clock_seconds(CLOCK_PROCESS_CPUTIME_ID) < end)
		signal_sink += oxeye_test_outer(1ul << 20);
}

__attribute__((noinline)) void oxeye_test_sleeper(long millis)
{
	struct timespec ts = { millis / 1000, (millis % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

int main(int argc, char **argv)
{
	/* Volatile: the calls' arguments and results must not look invariant, or the compiler
	 * hoists the (pure) call out of the loop and nothing burns. */
	volatile unsigned long sink = 0, rounds = 1ul << 20;
	volatile long millis = 50;
	double end;

	if (argc < 3)
		return 2;
	if (!strcmp(argv[1], "burn")) {
		end = clock_seconds(CLOCK_PROCESS_CPUTIME_ID) + atof(argv[2]);
		while (clock_seconds(CLOCK_PROCESS_CPUTIME_ID) < end)
			sink += oxeye_test_caller(rounds);
	} else if (!strcmp(argv[1], "deep")) {
		end = clock_seconds(CLOCK_PROCESS_CPUTIME_ID) + atof(argv[2]);
		while (clock_seconds(CLOCK_PROCESS_CPUTIME_ID) < end)
			sink += oxeye_test_outer(rounds);
	} else if (!strcmp(argv[1], "signal")) {
		burn_seconds = atof(argv[2]);
		signal(SIGUSR1, oxeye_test_signal_handler);
		raise(SIGUSR1);
	} else if (!strcmp(argv[1], "sleep")) {
		end = clock_seconds(CLOCK_MONOTONIC) + atof(argv[2]);
		if (argc > 3)
			millis = atol(argv[3]);
		while (clock_seconds(CLOCK_MONOTONIC) < end)
			oxeye_test_sleeper(millis);
	} else {
		return 2;
	}
	return 0;
}
