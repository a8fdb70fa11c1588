#include <gtest/gtest.h>

#include "combo/core/env.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  combo::set_num_threads(0);
  return RUN_ALL_TESTS();
}
