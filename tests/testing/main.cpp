#include <gtest/gtest.h>

#include <iostream>

#include "combo/core/device.h"
#include "combo/core/env.h"
#include "testing/testing.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  combo::set_num_threads(0);
  // Parity on a GPU compares with fixtures computed in float32: no TF32 anywhere.
  if (combo::cuda_available()) combo::set_tf32("off");
  const at::Device device = combo::testing::test_device();
  if (!device.is_cpu()) std::cout << "[ COMBO_TEST_DEVICE ] " << device.str() << std::endl;
  return RUN_ALL_TESTS();
}
