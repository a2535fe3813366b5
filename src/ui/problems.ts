// The Method step's setting problems in the studio's language: the engine reports a code and
// parameters (src/engine/train/method.ts), English comes from the engine's own table.
import { PROBLEM_EN, problemText, type Problem, type ProblemCode } from '../engine/train/method.ts';
import { i18n, type Locale } from './i18n.svelte.ts';
import { problemsZh } from './locales/problems.zh.ts';

export const problemTables: Record<Locale, Record<ProblemCode, string>> = { en: PROBLEM_EN, zh: problemsZh };

export function problemLabel(p: Pick<Problem, 'code' | 'params'>, locale: Locale = i18n.locale): string {
  return problemText(p, problemTables[locale]);
}
