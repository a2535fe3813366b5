// Conversations shared by the template and masking tests.
import type { Conversation } from '../../../src/data/index.ts';

export const MULTI: Conversation = {
  messages: [
    { role: 'user', content: 'Hi there' },
    { role: 'assistant', content: 'Hello! How can I help?' },
    { role: 'user', content: 'What is 2+2?' },
    { role: 'assistant', content: 'It is 4.' },
  ],
};
export const SYSTEM: Conversation = {
  system: 'You are terse.',
  messages: [
    { role: 'user', content: 'Capital of France?' },
    { role: 'assistant', content: 'Paris.' },
  ],
};
export const TOOLS: Conversation = {
  system: 'Use tools when needed.',
  tools: JSON.stringify([
    {
      name: 'get_weather',
      description: 'Current weather of a city',
      parameters: {
        type: 'object',
        properties: { city: { type: 'string', description: 'City name' } },
        required: ['city'],
      },
    },
  ]),
  messages: [
    { role: 'user', content: 'Weather in Paris?' },
    { role: 'function_call', content: JSON.stringify({ name: 'get_weather', arguments: { city: 'Paris' } }) },
    { role: 'observation', content: '{"temp": 18}' },
    { role: 'assistant', content: 'It is 18 degrees.' },
  ],
};
