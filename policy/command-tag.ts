/**
 * The command tag PostgreSQL reports for a raw statement (src/backend/tcop/utility.c
 * CreateCommandTag, src/include/tcop/cmdtaglist.h), computed from the parse tree.
 */
import type { PgNode } from './ast.js';

const ALTER_BY_OBJECT: Record<string, string> = {
  OBJECT_AGGREGATE: 'ALTER AGGREGATE',
  OBJECT_ATTRIBUTE: 'ALTER TYPE',
  OBJECT_CAST: 'ALTER CAST',
  OBJECT_COLLATION: 'ALTER COLLATION',
  OBJECT_COLUMN: 'ALTER TABLE',
  OBJECT_CONVERSION: 'ALTER CONVERSION',
  OBJECT_DATABASE: 'ALTER DATABASE',
  OBJECT_DOMAIN: 'ALTER DOMAIN',
  OBJECT_DOMCONSTRAINT: 'ALTER DOMAIN',
  OBJECT_EXTENSION: 'ALTER EXTENSION',
  OBJECT_FDW: 'ALTER FOREIGN DATA WRAPPER',
  OBJECT_FOREIGN_SERVER: 'ALTER SERVER',
  OBJECT_FOREIGN_TABLE: 'ALTER FOREIGN TABLE',
  OBJECT_FUNCTION: 'ALTER FUNCTION',
  OBJECT_INDEX: 'ALTER INDEX',
  OBJECT_LANGUAGE: 'ALTER LANGUAGE',
  OBJECT_LARGEOBJECT: 'ALTER LARGE OBJECT',
  OBJECT_OPCLASS: 'ALTER OPERATOR CLASS',
  OBJECT_OPERATOR: 'ALTER OPERATOR',
  OBJECT_OPFAMILY: 'ALTER OPERATOR FAMILY',
  OBJECT_POLICY: 'ALTER POLICY',
  OBJECT_PROCEDURE: 'ALTER PROCEDURE',
  OBJECT_ROLE: 'ALTER ROLE',
  OBJECT_ROUTINE: 'ALTER ROUTINE',
  OBJECT_RULE: 'ALTER RULE',
  OBJECT_SCHEMA: 'ALTER SCHEMA',
  OBJECT_SEQUENCE: 'ALTER SEQUENCE',
  OBJECT_TABLE: 'ALTER TABLE',
  OBJECT_TABCONSTRAINT: 'ALTER TABLE',
  OBJECT_TABLESPACE: 'ALTER TABLESPACE',
  OBJECT_TRIGGER: 'ALTER TRIGGER',
  OBJECT_EVENT_TRIGGER: 'ALTER EVENT TRIGGER',
  OBJECT_TSCONFIGURATION: 'ALTER TEXT SEARCH CONFIGURATION',
  OBJECT_TSDICTIONARY: 'ALTER TEXT SEARCH DICTIONARY',
  OBJECT_TSPARSER: 'ALTER TEXT SEARCH PARSER',
  OBJECT_TSTEMPLATE: 'ALTER TEXT SEARCH TEMPLATE',
  OBJECT_TYPE: 'ALTER TYPE',
  OBJECT_VIEW: 'ALTER VIEW',
  OBJECT_MATVIEW: 'ALTER MATERIALIZED VIEW',
  OBJECT_PUBLICATION: 'ALTER PUBLICATION',
  OBJECT_SUBSCRIPTION: 'ALTER SUBSCRIPTION',
  OBJECT_STATISTIC_EXT: 'ALTER STATISTICS',
};

const DROP_BY_OBJECT: Record<string, string> = {
  OBJECT_TABLE: 'DROP TABLE',
  OBJECT_SEQUENCE: 'DROP SEQUENCE',
  OBJECT_VIEW: 'DROP VIEW',
  OBJECT_MATVIEW: 'DROP MATERIALIZED VIEW',
  OBJECT_INDEX: 'DROP INDEX',
  OBJECT_TYPE: 'DROP TYPE',
  OBJECT_DOMAIN: 'DROP DOMAIN',
  OBJECT_COLLATION: 'DROP COLLATION',
  OBJECT_CONVERSION: 'DROP CONVERSION',
  OBJECT_SCHEMA: 'DROP SCHEMA',
  OBJECT_TSPARSER: 'DROP TEXT SEARCH PARSER',
  OBJECT_TSDICTIONARY: 'DROP TEXT SEARCH DICTIONARY',
  OBJECT_TSTEMPLATE: 'DROP TEXT SEARCH TEMPLATE',
  OBJECT_TSCONFIGURATION: 'DROP TEXT SEARCH CONFIGURATION',
  OBJECT_FOREIGN_TABLE: 'DROP FOREIGN TABLE',
  OBJECT_EXTENSION: 'DROP EXTENSION',
  OBJECT_FUNCTION: 'DROP FUNCTION',
  OBJECT_PROCEDURE: 'DROP PROCEDURE',
  OBJECT_ROUTINE: 'DROP ROUTINE',
  OBJECT_AGGREGATE: 'DROP AGGREGATE',
  OBJECT_OPERATOR: 'DROP OPERATOR',
  OBJECT_LANGUAGE: 'DROP LANGUAGE',
  OBJECT_CAST: 'DROP CAST',
  OBJECT_TRIGGER: 'DROP TRIGGER',
  OBJECT_EVENT_TRIGGER: 'DROP EVENT TRIGGER',
  OBJECT_RULE: 'DROP RULE',
  OBJECT_FDW: 'DROP FOREIGN DATA WRAPPER',
  OBJECT_FOREIGN_SERVER: 'DROP SERVER',
  OBJECT_OPCLASS: 'DROP OPERATOR CLASS',
  OBJECT_OPFAMILY: 'DROP OPERATOR FAMILY',
  OBJECT_POLICY: 'DROP POLICY',
  OBJECT_TRANSFORM: 'DROP TRANSFORM',
  OBJECT_ACCESS_METHOD: 'DROP ACCESS METHOD',
  OBJECT_PUBLICATION: 'DROP PUBLICATION',
  OBJECT_STATISTIC_EXT: 'DROP STATISTICS',
};

const DEFINE_BY_KIND: Record<string, string> = {
  OBJECT_AGGREGATE: 'CREATE AGGREGATE',
  OBJECT_OPERATOR: 'CREATE OPERATOR',
  OBJECT_TYPE: 'CREATE TYPE',
  OBJECT_TSPARSER: 'CREATE TEXT SEARCH PARSER',
  OBJECT_TSDICTIONARY: 'CREATE TEXT SEARCH DICTIONARY',
  OBJECT_TSTEMPLATE: 'CREATE TEXT SEARCH TEMPLATE',
  OBJECT_TSCONFIGURATION: 'CREATE TEXT SEARCH CONFIGURATION',
  OBJECT_COLLATION: 'CREATE COLLATION',
  OBJECT_ACCESS_METHOD: 'CREATE ACCESS METHOD',
};

/** Statement types whose tag does not depend on their fields. */
const FIXED: Record<string, string> = {
  InsertStmt: 'INSERT',
  DeleteStmt: 'DELETE',
  UpdateStmt: 'UPDATE',
  MergeStmt: 'MERGE',
  SelectStmt: 'SELECT',
  DeclareCursorStmt: 'DECLARE CURSOR',
  CreateDomainStmt: 'CREATE DOMAIN',
  CreateSchemaStmt: 'CREATE SCHEMA',
  CreateStmt: 'CREATE TABLE',
  CreateTableSpaceStmt: 'CREATE TABLESPACE',
  DropTableSpaceStmt: 'DROP TABLESPACE',
  AlterTableSpaceOptionsStmt: 'ALTER TABLESPACE',
  CreateExtensionStmt: 'CREATE EXTENSION',
  AlterExtensionStmt: 'ALTER EXTENSION',
  AlterExtensionContentsStmt: 'ALTER EXTENSION',
  CreateFdwStmt: 'CREATE FOREIGN DATA WRAPPER',
  AlterFdwStmt: 'ALTER FOREIGN DATA WRAPPER',
  CreateForeignServerStmt: 'CREATE SERVER',
  AlterForeignServerStmt: 'ALTER SERVER',
  CreateUserMappingStmt: 'CREATE USER MAPPING',
  AlterUserMappingStmt: 'ALTER USER MAPPING',
  DropUserMappingStmt: 'DROP USER MAPPING',
  CreateForeignTableStmt: 'CREATE FOREIGN TABLE',
  ImportForeignSchemaStmt: 'IMPORT FOREIGN SCHEMA',
  TruncateStmt: 'TRUNCATE TABLE',
  CommentStmt: 'COMMENT',
  SecLabelStmt: 'SECURITY LABEL',
  CopyStmt: 'COPY',
  AlterDomainStmt: 'ALTER DOMAIN',
  AlterDefaultPrivilegesStmt: 'ALTER DEFAULT PRIVILEGES',
  CompositeTypeStmt: 'CREATE TYPE',
  CreateEnumStmt: 'CREATE TYPE',
  CreateRangeStmt: 'CREATE TYPE',
  AlterEnumStmt: 'ALTER TYPE',
  ViewStmt: 'CREATE VIEW',
  IndexStmt: 'CREATE INDEX',
  RuleStmt: 'CREATE RULE',
  CreateSeqStmt: 'CREATE SEQUENCE',
  AlterSeqStmt: 'ALTER SEQUENCE',
  DoStmt: 'DO',
  CreatedbStmt: 'CREATE DATABASE',
  AlterDatabaseStmt: 'ALTER DATABASE',
  AlterDatabaseRefreshCollStmt: 'ALTER DATABASE',
  AlterDatabaseSetStmt: 'ALTER DATABASE',
  DropdbStmt: 'DROP DATABASE',
  NotifyStmt: 'NOTIFY',
  ListenStmt: 'LISTEN',
  UnlistenStmt: 'UNLISTEN',
  LoadStmt: 'LOAD',
  CallStmt: 'CALL',
  ClusterStmt: 'CLUSTER',
  ExplainStmt: 'EXPLAIN',
  RefreshMatViewStmt: 'REFRESH MATERIALIZED VIEW',
  AlterSystemStmt: 'ALTER SYSTEM',
  VariableShowStmt: 'SHOW',
  CreateTransformStmt: 'CREATE TRANSFORM',
  CreateTrigStmt: 'CREATE TRIGGER',
  CreateEventTrigStmt: 'CREATE EVENT TRIGGER',
  AlterEventTrigStmt: 'ALTER EVENT TRIGGER',
  CreatePLangStmt: 'CREATE LANGUAGE',
  CreateRoleStmt: 'CREATE ROLE',
  AlterRoleStmt: 'ALTER ROLE',
  AlterRoleSetStmt: 'ALTER ROLE',
  DropRoleStmt: 'DROP ROLE',
  DropOwnedStmt: 'DROP OWNED',
  ReassignOwnedStmt: 'REASSIGN OWNED',
  LockStmt: 'LOCK TABLE',
  ConstraintsSetStmt: 'SET CONSTRAINTS',
  CheckPointStmt: 'CHECKPOINT',
  ReindexStmt: 'REINDEX',
  CreateConversionStmt: 'CREATE CONVERSION',
  CreateCastStmt: 'CREATE CAST',
  CreateOpClassStmt: 'CREATE OPERATOR CLASS',
  CreateOpFamilyStmt: 'CREATE OPERATOR FAMILY',
  AlterOpFamilyStmt: 'ALTER OPERATOR FAMILY',
  AlterOperatorStmt: 'ALTER OPERATOR',
  AlterTypeStmt: 'ALTER TYPE',
  AlterTSDictionaryStmt: 'ALTER TEXT SEARCH DICTIONARY',
  AlterTSConfigurationStmt: 'ALTER TEXT SEARCH CONFIGURATION',
  CreatePolicyStmt: 'CREATE POLICY',
  AlterPolicyStmt: 'ALTER POLICY',
  CreateAmStmt: 'CREATE ACCESS METHOD',
  CreatePublicationStmt: 'CREATE PUBLICATION',
  AlterPublicationStmt: 'ALTER PUBLICATION',
  CreateSubscriptionStmt: 'CREATE SUBSCRIPTION',
  AlterSubscriptionStmt: 'ALTER SUBSCRIPTION',
  DropSubscriptionStmt: 'DROP SUBSCRIPTION',
  AlterCollationStmt: 'ALTER COLLATION',
  PrepareStmt: 'PREPARE',
  ExecuteStmt: 'EXECUTE',
  CreateStatsStmt: 'CREATE STATISTICS',
  AlterStatsStmt: 'ALTER STATISTICS',
};

const TRANSACTION: Record<string, string> = {
  TRANS_STMT_BEGIN: 'BEGIN',
  TRANS_STMT_START: 'START TRANSACTION',
  TRANS_STMT_COMMIT: 'COMMIT',
  TRANS_STMT_ROLLBACK: 'ROLLBACK',
  TRANS_STMT_SAVEPOINT: 'SAVEPOINT',
  TRANS_STMT_RELEASE: 'RELEASE',
  TRANS_STMT_ROLLBACK_TO: 'ROLLBACK',
  TRANS_STMT_PREPARE: 'PREPARE TRANSACTION',
  TRANS_STMT_COMMIT_PREPARED: 'COMMIT PREPARED',
  TRANS_STMT_ROLLBACK_PREPARED: 'ROLLBACK PREPARED',
};

const DISCARD: Record<string, string> = {
  DISCARD_ALL: 'DISCARD ALL',
  DISCARD_PLANS: 'DISCARD PLANS',
  DISCARD_TEMP: 'DISCARD TEMP',
  DISCARD_SEQUENCES: 'DISCARD SEQUENCES',
};

/** The tag for a `{ Type: body }` statement; `???` (PostgreSQL's own unknown tag) if not known. */
export function commandTag(type: string, n: PgNode): string {
  const fixed = FIXED[type];
  if (fixed) return fixed;
  switch (type) {
    case 'TransactionStmt':
      return TRANSACTION[n.kind] ?? '???';
    case 'ClosePortalStmt':
      return n.portalname ? 'CLOSE CURSOR' : 'CLOSE CURSOR ALL';
    case 'FetchStmt':
      return n.ismove ? 'MOVE' : 'FETCH';
    case 'DropStmt':
      return DROP_BY_OBJECT[n.removeType] ?? '???';
    case 'RenameStmt':
      if (n.renameType === 'OBJECT_COLUMN' || n.renameType === 'OBJECT_ATTRIBUTE')
        return ALTER_BY_OBJECT[n.relationType] ?? '???';
      return ALTER_BY_OBJECT[n.renameType] ?? '???';
    case 'AlterObjectDependsStmt':
    case 'AlterObjectSchemaStmt':
    case 'AlterOwnerStmt':
      return ALTER_BY_OBJECT[n.objectType] ?? '???';
    case 'AlterTableMoveAllStmt':
    case 'AlterTableStmt':
      return ALTER_BY_OBJECT[n.objtype] ?? '???';
    case 'AlterFunctionStmt':
      return ALTER_BY_OBJECT[n.objtype] ?? 'ALTER FUNCTION';
    case 'GrantStmt':
      return n.is_grant ? 'GRANT' : 'REVOKE';
    case 'GrantRoleStmt':
      return n.is_grant ? 'GRANT ROLE' : 'REVOKE ROLE';
    case 'DefineStmt':
      return DEFINE_BY_KIND[n.kind] ?? '???';
    case 'CreateFunctionStmt':
      return n.is_procedure ? 'CREATE PROCEDURE' : 'CREATE FUNCTION';
    case 'VacuumStmt':
      return n.is_vacuumcmd ? 'VACUUM' : 'ANALYZE';
    case 'CreateTableAsStmt':
      if (n.objtype === 'OBJECT_MATVIEW') return 'CREATE MATERIALIZED VIEW';
      return n.is_select_into ? 'SELECT' : 'CREATE TABLE AS';
    case 'VariableSetStmt':
      return n.kind === 'VAR_RESET' || n.kind === 'VAR_RESET_ALL' ? 'RESET' : 'SET';
    case 'DiscardStmt':
      return DISCARD[n.target] ?? '???';
    case 'DeallocateStmt':
      return n.isall || !n.name ? 'DEALLOCATE ALL' : 'DEALLOCATE';
    default:
      return '???';
  }
}
