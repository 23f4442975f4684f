/** Where the HTTPS listener gets its serving certificate from, and how it learns of a new one. */
export interface TlsMaterial {
  cert: string;
  key: string;
  /** PEM of the CA(s) that clients (API server, sidecars) should trust; '' when unknown */
  caBundle: string;
  notAfter: Date;
}

export interface TlsSource {
  /** resolves once a certificate is available (and keeps it current until stop) */
  start(): Promise<TlsMaterial>;
  current(): TlsMaterial | undefined;
  /** called after every change (rotation, a new file from cert-manager) */
  onChange(cb: (m: TlsMaterial) => void): void;
  /**
   * This replica just became the leader: do the leader-only work (renewal, caBundles) now instead of at
   * the next periodic check, which can be an hour away.
   */
  leading?(): void;
  stop(): Promise<void>;
}
