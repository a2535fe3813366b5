import type { ProblemCode } from '../../engine/train/method.ts';

// 方法页设置错误的中文说明（与 src/engine/train/method.ts 的 PROBLEM_EN 一一对应）。
export const problemsZh: Record<ProblemCode, string> = {
  'lr-range': '必须在 0 和 1 之间（小数据上的 LoRA 常用 5e-5，1e-4 … 2e-4 也很常见）',
  'more-than-zero': '必须大于 0',
  'whole-at-least': '必须是 ≥ {min} 的整数',
  'val-size': '填 [0, 1) 之间的比例，或整数行数',
  clip: '必须 ≥ 0（0 表示不裁剪）',
  'at-least-zero': '必须 ≥ 0',
  neftune: '必须 ≥ 0（0 = 关闭；常用 5）',
  dropout: '必须在 [0, 1) 之间',
  'unknown-module': '未知模块 {modules}',
  'no-module': '至少选择一个模块',
  'history-with-prompt': '不能与“在提示上训练”同时开启（LLaMA-Factory 也拒绝）',
  'label-smoothing': '必须在 [0, 0.5] 之间（0 = 普通 DPO）',
  finite: '必须是数字',
  'pref-needs-reference':
    '{loss} 需要参考模型，这里的参考模型是关闭 LoRA 适配器的基座模型：请选择 LoRA 或 QLoRA；全参数微调请改用 ORPO / SimPO（无需参考模型）',
};
