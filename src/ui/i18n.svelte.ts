import { en, type MessageKey } from './locales/en.ts';

export type { MessageKey };
import { zh } from './locales/zh.ts';

export type Locale = 'en' | 'zh';
const tables: Record<Locale, Record<MessageKey, string>> = { en, zh };
const STORAGE_KEY = 'tabtune.locale';

function initial(): Locale {
  const saved = globalThis.localStorage?.getItem(STORAGE_KEY);
  if (saved === 'en' || saved === 'zh') return saved;
  return globalThis.navigator?.language?.startsWith('zh') ? 'zh' : 'en';
}

export const i18n = $state({ locale: initial() });

export function setLocale(l: Locale): void {
  i18n.locale = l;
  globalThis.localStorage?.setItem(STORAGE_KEY, l);
  document.documentElement.lang = l === 'zh' ? 'zh-CN' : 'en';
}

/** Translates `key`, filling `{name}` slots from `vars`. Reactive on the locale. */
export function t(key: MessageKey, vars: Record<string, string | number> = {}): string {
  const s = tables[i18n.locale][key] ?? en[key];
  return s.replace(/\{(\w+)\}/g, (_, k: string) => (k in vars ? String(vars[k]) : `{${k}}`));
}
