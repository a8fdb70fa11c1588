// Hosts the precompiled LibTorch header shared by every executable. It is built with no
// compile definitions beyond LibTorch's, so that every executable (whatever else it defines)
// can reuse it.
int main() { return 0; }
