// Data-validation messages (row issues, warnings, detection reasons) in the studio's language. The
// data pipeline reports each one as English text plus a code and parameters (src/data/messages.ts);
// the text is what the CLI prints, the code is what gets translated here.
import { fillSlots, type DataMessage, type DataMessageCode, type DataMessageParams } from '../data/messages.ts';
import { i18n, type Locale } from './i18n.svelte.ts';
import { dataMessagesEn } from './locales/data-messages.en.ts';
import { dataMessagesZh } from './locales/data-messages.zh.ts';

export const dataMessageTables: Record<Locale, Record<DataMessageCode, string>> = {
  en: dataMessagesEn,
  zh: dataMessagesZh,
};

/** The message in `locale`; the English text when there is no code (e.g. a report from an older
 *  build restored from storage) or the code is unknown to this build. A `cause` replaces the English
 *  `detail` parameter outside English. */
export function renderDataMessage(
  locale: Locale,
  code: string | undefined,
  params: DataMessageParams | undefined,
  fallbackEnglish: string,
  cause?: DataMessage,
): string {
  const table = dataMessageTables[locale];
  if (code === undefined || !Object.hasOwn(table, code)) return fallbackEnglish;
  const p =
    cause && locale !== 'en' && params && 'detail' in params
      ? { ...params, detail: renderDataMessage(locale, cause.code, cause.params, String(params.detail), cause.cause) }
      : params;
  return fillSlots(table[code as DataMessageCode], p);
}

/** As renderDataMessage, in the current studio language (reactive on it). */
export function dataMessage(
  code: string | undefined,
  params: DataMessageParams | undefined,
  fallbackEnglish: string,
  cause?: DataMessage,
): string {
  return renderDataMessage(i18n.locale, code, params, fallbackEnglish, cause);
}

/** A coded item (an issue, a dataset_info.json error) or a message with its English text. */
export function dataText(m: Partial<DataMessage> | undefined, fallbackEnglish: string): string {
  return dataMessage(m?.code, m?.params, fallbackEnglish, m?.cause);
}
