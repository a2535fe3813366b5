// A large synthetic JSONL (no Node imports: also used by the browser Worker test).
export function bigJsonl(rows: number): string {
  const out: string[] = [];
  for (let i = 0; i < rows; i++) {
    if (i % 10_000 === 9_999)
      out.push(`{"instruction": "row ${i}", "output": `); // a broken row
    else if (i % 3 === 0)
      out.push(
        JSON.stringify({
          conversations: [
            { from: 'human', value: `Question ${i}: what is ${i} + 1?` },
            { from: 'gpt', value: `${i + 1}` },
          ],
        }),
      );
    else
      out.push(
        JSON.stringify({
          conversations: [
            { from: 'human', value: `Say ${i} in words.` },
            { from: 'gpt', value: `Number ${i}, 数字 ${i}.` },
          ],
        }),
      );
  }
  return out.join('\n') + '\n';
}

export const BROKEN_LINES = [10_000, 20_000, 30_000, 40_000, 50_000, 60_000, 70_000, 80_000, 90_000, 100_000];
