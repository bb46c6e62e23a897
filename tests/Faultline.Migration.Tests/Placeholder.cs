namespace Faultline.Migration.Tests;
