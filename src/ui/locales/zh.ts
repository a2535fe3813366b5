import type { MessageKey } from './en.ts';

// 简体中文界面文本（键与 en.ts 相同）。
export const zh: Record<MessageKey, string> = {
  'app.tagline': '在浏览器标签页里、用你自己的 GPU 微调开源大模型。数据不会离开你的电脑。',
  'lang.switch': 'English',
  'lang.label': '语言',
  'gpu.title': '你的 GPU',
  'gpu.probing': '正在引擎 Worker 中查找 WebGPU 适配器…',
  'gpu.vendor': '厂商',
  'gpu.architecture': '架构',
  'gpu.description': '设备',
  'gpu.features': '特性',
  'gpu.limits': '限制',
  'gpu.selftest': '自检',
  'gpu.selftest.ok': '{kernel} 在 GPU 上耗时 {ms} 毫秒，最大误差 {err}',
  'gpu.software': '这是软件适配器（用 CPU 模拟的 GPU）：功能完整，但训练非常慢。训练真实模型请使用带独立 GPU 的电脑。',
  'gpu.retry': '重试',
  'gpu.lost': 'GPU 设备已丢失（{reason}）：{message}。你的数据和设置都还在，点击“重试”重新连接。',
  'nogpu.title': '此处无法使用 WebGPU',
  'nogpu.why': 'Tabtune 通过 WebGPU 在你的 GPU 上训练，但当前浏览器没有提供：{message}',
  'nogpu.chrome': '请使用 Windows、macOS 或 ChromeOS 上 113 及以上版本的 Chrome / Edge，Linux 上 Chrome 144+，Safari 26+，或 Windows 上的 Firefox 141+。',
  'nogpu.linux': '在较旧的 Linux 版 Chrome 上，打开 chrome://flags，启用 “Unsafe WebGPU Support” 和 “Vulkan”，然后重启浏览器。',
  'nogpu.hardware': '请确认已开启硬件加速（chrome://settings/system）且 GPU 驱动为最新；chrome://gpu 可查看 Chrome 识别到的信息。',
  'nogpu.worker': 'WebGPU 还必须在 Web Worker 中可用（上面列出的浏览器都支持）。',
  'worker.failed': '引擎 Worker 启动失败：{message}',
};
