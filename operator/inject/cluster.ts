/**
 * Whether the cluster runs native sidecars (init containers with restartPolicy Always): GA-enabled by default
 * from Kubernetes 1.29. Read from the API server's /version; overridable because a control plane may be
 * newer than its kubelets during an upgrade.
 */
import * as k8s from '@kubernetes/client-node';

export type NativeSidecarSetting = 'auto' | 'true' | 'false';

export function parseNativeSidecarSetting(v: string | undefined): NativeSidecarSetting {
  const s = (v ?? 'auto').trim().toLowerCase();
  if (s === 'auto' || s === 'true' || s === 'false') return s;
  throw new Error(`--native-sidecar must be auto, true or false, not ${JSON.stringify(v)}`);
}

/** `{major: "1", minor: "29+"}` (managed clusters add suffixes) → true from 1.29 on. */
export function supportsNativeSidecars(version: { major?: string; minor?: string }): boolean {
  const major = Number.parseInt(version.major ?? '', 10);
  const minor = Number.parseInt(version.minor ?? '', 10);
  if (!Number.isFinite(major) || !Number.isFinite(minor)) return false;
  return major > 1 || (major === 1 && minor >= 29);
}

/**
 * Resolves the setting once at start and then every `refreshMs` in the background; while /version cannot be
 * read it answers false (a regular container works everywhere).
 */
export class NativeSidecarDetector {
  private value: boolean;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly setting: NativeSidecarSetting,
    private readonly kc?: k8s.KubeConfig,
    private readonly log?: (f: Record<string, unknown>) => void,
    private readonly refreshMs = 10 * 60_000,
  ) {
    this.value = setting === 'true';
  }

  get native(): boolean {
    return this.value;
  }

  async start(): Promise<void> {
    if (this.setting !== 'auto' || !this.kc) return;
    await this.refresh();
    this.timer = setInterval(() => void this.refresh(), this.refreshMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  private async refresh(): Promise<void> {
    try {
      const info = await this.kc!.makeApiClient(k8s.VersionApi).getCode();
      const next = supportsNativeSidecars(info);
      if (next !== this.value) this.log?.({ msg: 'sidecar mode', native: next, version: info.gitVersion });
      this.value = next;
    } catch (err) {
      this.log?.({
        msg: 'cannot read the API server version; keeping sidecar mode',
        native: this.value,
        error: String((err as Error)?.message ?? err),
      });
    }
  }
}
