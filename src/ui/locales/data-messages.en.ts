import { DATA_MESSAGES, type DataMessageCode } from '../../data/messages.ts';

// English data-validation messages. They are the data pipeline's own table, so the studio's English
// text is byte-identical to the reasons the CLI prints (and the e2e test reads).
export const dataMessagesEn: Record<DataMessageCode, string> = { ...DATA_MESSAGES };
