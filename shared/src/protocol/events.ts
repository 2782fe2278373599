import type {
  Ack,
  AgentStatus,
  AuthChallenge,
  AuthOk,
  AuthResponse,
  ModelChunkRequest,
  SignedModelManifest,
  SignedTask,
  TaskCancel,
  TaskFailed,
  TaskProgress,
  UploadBegin,
  UploadChunk,
  UploadCommit,
} from './messages';
import type { CoordinatorKeyChain } from './key-rotation';
import type { SecAggAnswer, SecAggStep } from './secagg';

/**
 * Typed event maps for the agent namespace, used by both the coordinator's gateway
 * (`Server<AgentToCoordinatorEvents, CoordinatorToAgentEvents>`) and the agent's client
 * (`Socket<CoordinatorToAgentEvents, AgentToCoordinatorEvents>`). Every payload is still
 * validated with its schema on receipt: types are a promise, schemas are the check.
 */
export interface CoordinatorToAgentEvents {
  'auth:challenge': (msg: AuthChallenge) => void;
  'auth:ok': (msg: AuthOk) => void;
  /** A signed task; the agent acks once it has verified and accepted (or refused) it. */
  'task:offer': (msg: SignedTask, ack: (res: Ack) => void) => void;
  'task:cancel': (msg: TaskCancel) => void;
  /** A secure-aggregation step of a task's round; the agent answers in the ack (docs/privacy.md). */
  'secagg:step': (msg: SecAggStep, ack: (res: Ack<SecAggAnswer>) => void) => void;
  /**
   * The coordinator's current keys and its announcement chain, sent after authentication
   * (before any task) and on every rotation; the agent follows it from its pinned key.
   */
  'keys:announce': (msg: CoordinatorKeyChain) => void;
  /** Fatal or informative error; fatal ones are followed by a disconnect. */
  error: (msg: { code: string; message: string }) => void;
}

export interface AgentToCoordinatorEvents {
  'auth:response': (msg: AuthResponse) => void;
  status: (msg: AgentStatus) => void;
  'model:manifest': (msg: { version: string }, ack: (res: Ack<SignedModelManifest>) => void) => void;
  'model:chunk': (msg: ModelChunkRequest, ack: (res: Ack<{ data: Uint8Array }>) => void) => void;
  'task:progress': (msg: TaskProgress) => void;
  'task:failed': (msg: TaskFailed) => void;
  /** Starts (or resumes) an upload; answers the id and the next chunk index expected. */
  'update:begin': (
    msg: UploadBegin,
    ack: (res: Ack<{ uploadId: string; nextIndex: number }>) => void,
  ) => void;
  'update:chunk': (msg: UploadChunk, ack: (res: Ack<{ nextIndex: number }>) => void) => void;
  /** Ends an upload: the coordinator verifies everything and accepts or rejects it. */
  'update:commit': (msg: UploadCommit, ack: (res: Ack<{ accepted: true; updateId: string }>) => void) => void;
}
