import type { SignedTask } from '@fedssl/shared/protocol';
import type { PrivacySpent } from '../privacy/privacy-report';
import type { RunConfig } from './run-config';

export type RunState = 'created' | 'running' | 'paused' | 'completed' | 'cancelled' | 'failed';
export type RoundState = 'open' | 'training' | 'aggregating' | 'published' | 'failed';
/**
 * offered: task sent, no answer yet · accepted: its update passed every check ·
 * rejected: its update failed a check · failed: the agent reported a failure ·
 * dropped: not delivered, declined, or no answer by the deadline.
 */
export type ParticipantState = 'offered' | 'accepted' | 'rejected' | 'failed' | 'dropped';

/** Maximum attempts of one round before the run fails. */
export const MAX_ROUND_ATTEMPTS = 3;

export interface RunRecord {
  id: string;
  name: string;
  state: RunState;
  config: RunConfig;
  currentRound: number;
  initialModelVersion: string | null;
  latestModelVersion: string | null;
  createdAt: string;
  updatedAt: string;
  /** Why the run failed or was cancelled, else null. */
  reason: string | null;
}

export interface RoundRow {
  runId: string;
  round: number;
  attempt: number;
  state: RoundState;
  startedAt: string;
  deadline: string | null;
  publishedAt: string | null;
  baseModelVersion: string;
  baseModelSha256: string;
  modelVersion: string | null;
  modelSha256: string | null;
  reason: string | null;
}

export interface TaskRow {
  id: string;
  runId: string;
  round: number;
  attempt: number;
  siteId: string;
  nonce: string;
  modelVersion: string;
  modelHash: string;
  issuedAt: string;
  deadline: string;
  state: ParticipantState;
  reason: string | null;
  answeredAt: string | null;
  signedTask: SignedTask;
}

export interface UpdateRow {
  id: string;
  taskId: string;
  runId: string;
  round: number;
  attempt: number;
  siteId: string;
  exampleCount: number;
  metrics: Record<string, number>;
  /** Encrypted envelope as uploaded, and its signed header (JSON {header, signature}) beside it. */
  envelopePath: string;
  headerPath: string;
  receivedAt: string;
  /** The accepted envelope's header signature (null for rows written before it was kept). */
  signature?: string | null;
}

export interface ParticipantView {
  siteId: string;
  siteName: string | null;
  state: ParticipantState;
  exampleCount: number | null;
  metrics: Record<string, number> | null;
  reason: string | null;
}

export interface RoundView {
  round: number;
  attempt: number;
  state: RoundState;
  startedAt: string;
  deadline: string | null;
  publishedAt: string | null;
  modelVersion: string | null;
  modelSha256: string | null;
  reason: string | null;
  participants: ParticipantView[];
}

/** `privacy`: ε spent so far by a DP run (null without DP). */
export type RunDetail = RunRecord & { rounds: RoundView[]; privacy: PrivacySpent | null };
