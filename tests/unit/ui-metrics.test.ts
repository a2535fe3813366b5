import { describe, expect, it } from 'vitest';
import { charTokens, perplexity, rougeL, sentenceBleu4, similarity, wordTokens } from '../../src/worker/metrics.ts';

// Expected values worked out by hand from the definitions (NLTK sentence_bleu + method3; ROUGE-L F1).
describe('BLEU-4 (NLTK sentence_bleu, method3 smoothing)', () => {
  it('is 1 for an identical sentence of ≥ 4 tokens', () => {
    expect(sentenceBleu4(charTokens('hello world'), charTokens('hello world'))).toBeCloseTo(1, 12);
  });
  it('smooths a zero 4-gram precision to 1/(2·count)', () => {
    // p1 = 3/4, p2 = 2/3, p3 = 1/2, p4 = 0/1 → 1/2; BP = 1. BLEU = (3/4 · 2/3 · 1/2 · 1/2)^(1/4) = 0.125^(1/4)
    expect(sentenceBleu4(charTokens('abce'), charTokens('abcd'))).toBeCloseTo(0.125 ** 0.25, 12);
  });
  it('applies the brevity penalty for short hypotheses', () => {
    // hyp "abcd" vs ref "abcdef": all precisions 1, BP = exp(1 - 6/4)
    expect(sentenceBleu4(charTokens('abcdef'), charTokens('abcd'))).toBeCloseTo(Math.exp(1 - 6 / 4), 12);
  });
  it('successive zero precisions get 1/2, 1/4 … and no unigram match gives 0', () => {
    // hyp "abxy" vs ref "abzw": p1 = 2/4, p2 = 1/3, p3 = 0/2 → 1/(2·2), p4 = 0/1 → 1/(4·1)
    expect(sentenceBleu4(charTokens('abzw'), charTokens('abxy'))).toBeCloseTo(
      (0.5 * (1 / 3) * 0.25 * 0.25) ** 0.25,
      12,
    );
    expect(sentenceBleu4(charTokens('abc'), charTokens('xyz'))).toBe(0);
    expect(sentenceBleu4(charTokens('abc'), [])).toBe(0);
  });
  it('counts clipped n-grams', () => {
    // hyp "aaaa" vs ref "aab": p1 = 2/4, p2 = 1/3, p3 = 0/2 → 1/4, p4 = 0/1 → 1/4; c = 4 > r = 3 → BP = 1
    expect(sentenceBleu4(charTokens('aab'), charTokens('aaaa'))).toBeCloseTo((0.5 * (1 / 3) * 0.25 * 0.25) ** 0.25, 12);
  });
});

describe('ROUGE-L', () => {
  it('is the F1 of the longest common subsequence', () => {
    // LCS("the cat sat on the mat", "the cat on a mat") = the cat on mat = 4 → P = 4/5, R = 4/6
    const f = rougeL(wordTokens('the cat sat on the mat'), wordTokens('the cat on a mat'));
    const p = 4 / 5,
      r = 4 / 6;
    expect(f).toBeCloseTo((2 * p * r) / (p + r), 12);
    expect(rougeL(['a'], ['b'])).toBe(0);
  });
  it('splits Chinese into characters and keeps Latin words and punctuation', () => {
    expect(wordTokens('我叫Tabtune，由你训练。')).toEqual(['我', '叫', 'Tabtune', '，', '由', '你', '训', '练', '。']);
    expect(wordTokens("It's 3.5 GB")).toEqual(['It', "'", 's', '3', '.', '5', 'GB']);
  });
});

describe('similarity over rows', () => {
  it('averages ×100 and scores empty predictions 0', () => {
    const s = similarity([
      { reference: 'I am Tabtune.', prediction: 'I am Tabtune.' },
      { reference: 'I am Tabtune.', prediction: '' },
    ]);
    expect(s.rows).toBe(2);
    expect(s.bleu4).toBeCloseTo(50, 9);
    expect(s.rougeL).toBeCloseTo(50, 9);
    expect(similarity([])).toEqual({ bleu4: 0, rougeL: 0, rows: 0 });
  });
  it('perplexity is exp(loss)', () => {
    expect(perplexity(Math.log(7))).toBeCloseTo(7, 12);
  });
});
