// WebGPU's numeric flag values, so engine modules do not depend on the GPUBufferUsage
// global being installed before they are imported (Node installs it from `webgpu`).
export const BUF = {
  MAP_READ: 0x0001,
  MAP_WRITE: 0x0002,
  COPY_SRC: 0x0004,
  COPY_DST: 0x0008,
  INDEX: 0x0010,
  VERTEX: 0x0020,
  UNIFORM: 0x0040,
  STORAGE: 0x0080,
  INDIRECT: 0x0100,
  QUERY_RESOLVE: 0x0200,
} as const;
export const MAP_MODE_READ = 0x0001;
