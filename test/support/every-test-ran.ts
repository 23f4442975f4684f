/**
 * A vitest reporter for `make test` (and so CI): with DBGUARD_REQUIRE_EVERY_TEST=1 the run fails when
 * any collected test was skipped or left pending, or a test file held no test. A tier that did not run
 * (a missing tool, a `.skip` left behind) can then never pass as green. Without the variable (a
 * developer's `npx vitest run FILE -t NAME`, where skipping is the point) it does nothing.
 */
import type { Reporter, TestModule } from 'vitest/node';

export default class EveryTestRan implements Reporter {
  onTestRunEnd(modules: ReadonlyArray<TestModule>): void {
    if (process.env.DBGUARD_REQUIRE_EVERY_TEST !== '1') return;
    const notRun: string[] = [];
    for (const m of modules) {
      const tests = [...m.children.allTests()];
      if (tests.length === 0) notRun.push(`${m.relativeModuleId}: no test in the file`);
      for (const t of tests) {
        const state = t.result().state;
        if (state === 'skipped' || state === 'pending')
          notRun.push(`${m.relativeModuleId} > ${t.fullName}: ${state}`);
      }
    }
    if (notRun.length === 0) return;
    process.stderr.write(
      `\nmake test: ${notRun.length} test(s) did not run, and every tier must:\n${notRun.map((l) => `  ${l}`).join('\n')}\n`,
    );
    process.exitCode = 1;
  }
}
