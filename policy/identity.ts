/** Who is connected: the facts subjects are matched against (contract §1 Subjects, §5 identity). */
export interface Identity {
  /** `namespace/name` of the workload's ServiceAccount, when known */
  serviceAccount?: string;
  pod?: string;
  /** a verified token's subject or email */
  user?: string;
  /** a verified token's groups */
  groups: string[];
  /** the user in the client's StartupMessage */
  databaseUser: string;
  applicationName?: string;
  clientAddr?: string;
}
