/** Who is connected: the facts subjects are matched against (contract §1 Subjects, §5 identity). */
export interface Identity {
  /** `namespace/name` of the workload's ServiceAccount, when known */
  serviceAccount?: string;
  pod?: string;
  /** a verified token's subject or email */
  user?: string;
  /** a verified token's groups */
  groups: string[];
  /**
   * The database user the session is proven to run as (docs/security.md, "Identity is what was
   * proven"): the StartupMessage user when the client's own authentication was relayed to the server,
   * the user of the proxy's own credentials when the proxy logs in upstream (credentials or token mode).
   * `DatabaseUser` subjects match this.
   */
  databaseUser: string;
  /**
   * The StartupMessage user when the proxy logged in with its own credentials: what the client claimed,
   * recorded in the audit trail, never matched against a subject.
   */
  claimedDatabaseUser?: string;
  applicationName?: string;
  clientAddr?: string;
}
