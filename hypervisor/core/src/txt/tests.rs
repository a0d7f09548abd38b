mod layout_tests;
