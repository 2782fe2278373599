import { appendFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';

/** A JSON Lines record of the work an experiment finished, so that `--resume` skips it. */
export interface Journal<T> {
  file: string;
  /** The entries already there (only with `resume`; otherwise the file starts empty). */
  done: T[];
  append(entry: T): void;
}

/** Open `file` as a journal: read it when resuming, else empty it. */
export function openJournal<T>(file: string, resume: boolean): Journal<T> {
  const done =
    resume && existsSync(file)
      ? readFileSync(file, 'utf8')
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as T)
      : [];
  if (!resume) writeFileSync(file, '');
  return { file, done, append: (entry) => appendFileSync(file, `${JSON.stringify(entry)}\n`) };
}
