/**
 * Flags for the node command line that runs dbguard: the image's ENTRYPOINT (Dockerfile) carries
 * them, and the benchmarks start the proxy with the same ones. V8 reads heap sizes only when the
 * process starts: `setFlagsFromString` at runtime changes nothing, and NODE_OPTIONS refuses this one.
 *
 * --min-semi-space-size=8 (MiB): V8 starts the young generation small and grows it only when many
 * objects survive, which a proxy's per-statement objects do not; at one busy client it then
 * collects every 100 ms. With 8 MiB it collects half as often. In alternating comparisons on the
 * benchmark host, p99 latency at one client was lower in five of six (for example 475 → 309 µs) and
 * TPS 3 to 8 % higher, for about 10 MiB more RSS (docs/benchmarks.md, item 18).
 */
export const NODE_FLAGS: readonly string[] = ['--min-semi-space-size=8'];
