#include "combo/core/device.h"

#include <ATen/Context.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "combo/core/check.h"
#include "testing/testing.h"

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const combo::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected combo::Error";
  return "";
}

}  // namespace

TEST(DeviceTest, AutoIsTheFirstGpuWhenThereIsOneElseTheCpu) {
  const c10::Device d = combo::resolve_device("auto");
  if (combo::cuda_available()) {
    EXPECT_EQ(d, c10::Device(c10::kCUDA, 0));
  } else {
    EXPECT_EQ(d, c10::Device(c10::kCPU));
  }
  EXPECT_EQ(combo::resolve_device("cpu"), c10::Device(c10::kCPU));
}

TEST(DeviceTest, BadOrAbsentDevicesAreErrorsNamingTheKey) {
  const std::string bad = error_of([] { combo::resolve_device("gpu0", "runtime.device"); });
  EXPECT_NE(bad.find("runtime.device"), std::string::npos) << bad;
  EXPECT_NE(bad.find("gpu0"), std::string::npos) << bad;
  if (!combo::cuda_available()) {
    const std::string absent = error_of([] { combo::resolve_device("cuda:0", "--device"); });
    EXPECT_NE(absent.find("--device"), std::string::npos) << absent;
    EXPECT_NE(absent.find(combo::built_with_cuda() ? "no CUDA device" : "no CUDA"),
              std::string::npos)
        << absent;
  } else {
    const int n = static_cast<int>(torch::cuda::device_count());
    const std::string far = error_of([n] { combo::resolve_device("cuda:" + std::to_string(n)); });
    EXPECT_NE(far.find("CUDA device(s)"), std::string::npos) << far;
  }
}

TEST(DeviceTest, Tf32PolicyIsChecked) {
  const std::string bad = error_of([] { combo::set_tf32("maybe", "runtime.tf32"); });
  EXPECT_NE(bad.find("runtime.tf32"), std::string::npos) << bad;
  EXPECT_NO_THROW(combo::set_tf32("default"));
}

TEST(DeviceTest, CpuHasNoGpuMemoryAndADescription) {
  const auto info = combo::describe_device(c10::Device(c10::kCPU));
  EXPECT_EQ(info.device, "cpu");
  EXPECT_EQ(info.total_memory, 0);
  EXPECT_NE(info.to_json().find("\"device\": \"cpu\""), std::string::npos) << info.to_json();
  const auto m = combo::gpu_memory(c10::Device(c10::kCPU));
  EXPECT_EQ(m.peak_reserved, 0);
}

TEST(DeviceCuda, DescribesTheGpuAndTracksPeakMemory) {
  COMBO_CUDA_OR_SKIP(device);
  const auto info = combo::describe_device(device);
  EXPECT_EQ(info.device, "cuda:0");
  EXPECT_FALSE(info.name.empty());
  EXPECT_GT(info.total_memory, int64_t{1} << 30);
  EXPECT_GT(info.multiprocessors, 0);
  EXPECT_FALSE(info.cuda_runtime.empty());
  std::cout << "[ INFO ] " << info.to_string() << std::endl;

  combo::synchronize(device);
  combo::reset_peak_gpu_memory(device);
  const auto before = combo::gpu_memory(device);
  const int64_t bytes = int64_t{64} << 20;
  {
    at::Tensor t = torch::ones({bytes / 4}, torch::dtype(torch::kFloat32).device(device));
    combo::synchronize(device);
    const auto during = combo::gpu_memory(device);
    EXPECT_GE(during.allocated - before.allocated, bytes);
    EXPECT_GE(during.reserved, during.allocated);
  }
  const auto after = combo::gpu_memory(device);
  EXPECT_GE(after.peak_allocated - before.allocated, bytes);
  EXPECT_GE(after.peak_reserved, after.peak_allocated);
  EXPECT_LT(after.allocated, before.allocated + bytes);
}

TEST(DeviceCuda, Tf32SwitchesReachLibTorch) {
  COMBO_CUDA_OR_SKIP(device);
  auto& ctx = at::globalContext();
  const bool cublas = ctx.allowTF32CuBLAS(), cudnn = ctx.allowTF32CuDNN();
  combo::set_tf32("on");
  EXPECT_TRUE(ctx.allowTF32CuBLAS());
  EXPECT_TRUE(ctx.allowTF32CuDNN());
  combo::set_tf32("off");
  EXPECT_FALSE(ctx.allowTF32CuBLAS());
  EXPECT_FALSE(ctx.allowTF32CuDNN());
  ctx.setAllowTF32CuBLAS(cublas);
  ctx.setAllowTF32CuDNN(cudnn);
}
