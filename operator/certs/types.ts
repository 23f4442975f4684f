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
  stop(): Promise<void>;
}
