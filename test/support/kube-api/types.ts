/** Shapes shared by the in-process Kubernetes API server's modules. */

/** Any Kubernetes object as JSON: only the fields this server reads are typed. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: KubeMeta;
  [field: string]: unknown;
}

export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller?: boolean;
  blockOwnerDeletion?: boolean;
}

export interface KubeMeta {
  name?: string;
  generateName?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  deletionGracePeriodSeconds?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  finalizers?: string[];
  ownerReferences?: OwnerReference[];
  [field: string]: unknown;
}

/** The identity behind a request (from its bearer token), as admission and TokenReview report it. */
export interface UserInfo {
  username: string;
  uid?: string;
  groups?: string[];
  extra?: Record<string, string[]>;
}

/** One served resource type: a built-in or one defined by a CustomResourceDefinition. */
export interface ResourceType {
  group: string; // '' for core
  /** served versions, the first is the preferred (storage) one */
  versions: string[];
  kind: string;
  listKind: string;
  plural: string;
  singular: string;
  namespaced: boolean;
  shortNames: string[];
  categories: string[];
  /** PUT/PATCH .../status exists; main-resource writes then keep the stored status */
  statusSubresource: boolean;
  /** metadata.generation is kept and bumped on changes outside metadata (and status) */
  generation: boolean;
  /** DELETE answers the object (pods, custom resources) instead of a Success Status */
  returnDeletedObject: boolean;
  /** custom resources: PUT without metadata.resourceVersion is rejected, as kube-apiserver does */
  requireResourceVersionOnUpdate: boolean;
  /** virtual resources (TokenReview) are only ever created, never stored */
  createOnly: boolean;
  verbs: string[];
  /** set for custom resources: the CRD's schema per version */
  crd?: {
    name: string;
    schemas: Record<string, unknown | undefined>;
    printerColumns: Record<string, PrinterColumn[]>;
  };
}

export interface PrinterColumn {
  name: string;
  type: string;
  jsonPath: string;
  description?: string;
  priority?: number;
  format?: string;
}

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';

/** An entry of the retained change history that watches replay from. */
export interface ChangeEvent {
  rv: number;
  key: string; // resource type key: group/plural
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: KubeObject;
  /** the object before a MODIFIED change (selector-filtered watches turn leaving into DELETED) */
  old?: KubeObject;
}

/** One request as the server saw it: tests count list and watch calls with this. */
export interface RequestRecord {
  time: number;
  method: string;
  path: string;
  query: Record<string, string>;
  verb: string; // get list watch create update patch delete deletecollection discovery other
  group?: string;
  resource?: string;
  subresource?: string;
  namespace?: string;
  name?: string;
  user?: string;
  status?: number;
}
