// Eight consecutive weights, elements 8c..8c+7 (`weightOctet(c)` of the *_octet decoders). A
// struct rather than array<vec4<f32>, 2>: compilers that keep private arrays in memory
// (SwiftShader's) would store and reload it for every octet.
struct Octet {
  lo: vec4<f32>,
  hi: vec4<f32>,
}
